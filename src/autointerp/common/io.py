"""Atomic output helpers (a failed or killed job never leaves a half-written file) and small readers."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_parquet(table, path, **kwargs) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kwargs.setdefault("compression", "zstd")
    # Byte-stream-split makes float32 activations compress (plain zstd gains ~nothing on float noise).
    leaves = [_leaf(f.type) for f in table.schema]
    if any(pa.types.is_floating(t) for t in leaves) and all(
            pa.types.is_floating(t) or pa.types.is_integer(t) for t in leaves):
        kwargs.setdefault("use_byte_stream_split", True)
        kwargs.setdefault("use_dictionary", False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def _leaf(typ):
    import pyarrow as pa

    while pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_large_list(typ):
        typ = typ.value_type
    return typ


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_csv(rows: list[dict], path, columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(value):
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.6g}"
    return value


def path_fields(paths, names: list[str]) -> list[dict]:
    """Parse ``…/{names[0]}/…/{names[-1]}/{format}.ext`` output paths into dicts (``path``, ``format``, names)."""
    items = []
    for p in paths:
        p = Path(p)
        item = {"path": str(p), "format": p.stem}
        folder = p.parent
        for name in reversed(names):
            item[name] = folder.name
            folder = folder.parent
        items.append(item)
    return items
