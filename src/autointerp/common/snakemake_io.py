"""Glue for scripts/: send logging and stderr to the rule's log file, turn known errors into clean exits."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


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


def console(message: str) -> None:
    """One line for the user's console as well as the rule's log (Snakemake shows a script's stderr)."""
    logging.getLogger("autointerp").info("%s", message)
    print(message, file=sys.stderr, flush=True)


def job_label(io: "RuleIO") -> str:
    """``rule [kind/]set/explainer/[simulator/|scorer/]format[/chunk]``: how progress and summary lines name a job."""
    w = io.wildcards
    keys = ("kind", "neuron_set", "puzzle_set", "explainer", "simulator", "scorer", "format", "chunk")
    parts = [w[k] for k in keys if w.get(k)]
    return f"{io.rule} {'/'.join(parts)}".strip()


def allowed_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroup cpusets) and, inside a SLURM job, the
    allocation (SLURM_CPUS_PER_TASK, else SLURM_CPUS_ON_NODE): clusters without task/affinity or cgroups set no
    mask, so os.cpu_count() would be the whole node's cores."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            n = min(n, int(value))
            break
    return max(1, n)


def usable_threads(requested) -> int:
    """Threads for torch: what the rule asked for, never more than the CPUs this process may use (--cores 8 on a
    2-core laptop, or a job given fewer CPUs than its node has, must not oversubscribe), at least 1."""
    return max(1, min(int(requested or 1), allowed_cpus()))


def as_list(value) -> list[str]:
    """A named input as a list of paths: Snakemake gives one path as a string and several as a list."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, (str, os.PathLike)) else [str(v) for v in value]


@dataclass(frozen=True)
class RuleIO:
    """What a job needs from Snakemake besides its settings, as plain data (the library never sees Snakemake)."""

    rule: str
    input: dict[str, Any]  # named inputs: a path, or a list of paths
    output: dict[str, Any]
    inputs: list[str]  # every input path in order (for rules whose inputs are one unnamed list)
    outputs: list[str]
    wildcards: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    resources: dict[str, Any] = field(default_factory=dict)  # the job's integer resources (api_share, mem_mb, ...)

    @property
    def rate_share(self) -> int:
        """API jobs that may run at once (resource api_share, rules/common.smk): this job's share of a rate limit."""
        return max(1, int(self.resources.get("api_share") or 1))

    @classmethod
    def from_snakemake(cls, snakemake) -> "RuleIO":
        def named(files) -> dict[str, Any]:
            return {k: (str(v) if isinstance(v, str) else [str(x) for x in v]) for k, v in files.items()}

        return cls(rule=str(getattr(snakemake, "rule", "?")), input=named(snakemake.input),
                   output=named(snakemake.output), inputs=[str(p) for p in snakemake.input],
                   outputs=[str(p) for p in snakemake.output], wildcards=dict(snakemake.wildcards.items()),
                   threads=int(snakemake.threads or 1),
                   resources={k: v for k, v in getattr(snakemake, "resources", {}).items() if isinstance(v, int)})


def run_rule(snakemake, settings_cls, job: Callable[[Any, RuleIO], Any]) -> Any:
    """What every script does: settings from ``params.settings``, then one library call, logged.

    ``settings_cls`` is the stage's settings class (None for jobs that read only their inputs)."""
    # Model-loading bars (transformers' "Loading weights", hub downloads) would go to the console between the
    # jobs' lines; the logs say what loads. Read when transformers is imported; HF_HUB_DISABLE_PROGRESS_BARS=0
    # brings them back.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with rule_context(snakemake) as log:
        settings = None if settings_cls is None else settings_cls.from_params(snakemake.params.settings)
        result = job(settings, RuleIO.from_snakemake(snakemake))
        log.info("%s: %s", getattr(snakemake, "rule", "job"), result)
        return result


def run_gather(settings: None, io: RuleIO) -> dict:
    """The gather_* rules: each named output is its same-named inputs (a set's chunk files) concatenated."""
    from autointerp.common.io import gather_files

    return {name: gather_files([io.input[name]] if isinstance(io.input[name], str) else io.input[name], path)
            for name, path in io.output.items()}
