"""Glue for scripts/: send logging and stderr to the rule's log file, turn known errors into clean exits."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


@contextlib.contextmanager
def rule_context(snakemake):
    """Log to ``snakemake.log[0]``; on a known input error print one clear line and exit non-zero."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    rule = getattr(snakemake, "rule", "?")
    try:
        yield logging.getLogger(f"autointerp.{rule}")
    except (ValueError, RuntimeError, OSError) as exc:
        from autointerp import known_errors

        if isinstance(exc, known_errors()):
            logging.getLogger("autointerp").error("%s", exc)
            print(f"autointerp error in rule {rule}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        logging.getLogger("autointerp").exception("rule %s failed", rule)
        raise
    except Exception:
        logging.getLogger("autointerp").exception("rule %s failed", rule)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()


def usable_threads(requested) -> int:
    """Threads for torch: what the rule asked for, never more than the machine's cores (--cores 8 on a
    2-core laptop must not oversubscribe), at least 1."""
    import os

    return max(1, min(int(requested or 1), os.cpu_count() or 1))
