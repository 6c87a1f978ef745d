"""Atomic output helpers (a failed or killed job never leaves a half-written file) and strict readers.

The readers never mangle or half-read an input: a truncated, corrupt or non-UTF-8 file raises ``InputFileError``
(or the caller's error class) with one line naming the file, where it breaks, and how to fix it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path


class InputFileError(ValueError):
    """An input file is missing, truncated, corrupt or not in the expected format; the one-line message names
    the file, where it breaks and how to fix it."""


# Which rule writes a results/ file, by the folders of its path (rules/*.smk); used only to word the fix.
_PRODUCERS = (
    ("puzzles", "prompts", "render_puzzle_prompts"),
    ("puzzles", "explanations", "explain_puzzles"),
    ("puzzles", "similarity", "puzzle_similarity"),
    (None, "activation_shards", "extract_shard"),
    (None, "activations", "merge_activations"),
    (None, "corpus", "build_corpus"),
    (None, "neuron_sets", "neuron_set"),
    (None, "records", "records"),
    (None, "prompts", "render_prompts"),
    (None, "explanations", "explain"),
    (None, "scores", "simulate_score"),
    (None, "simulations", "simulate_score"),
    (None, "similarity", "adacs_similarity"),
    (None, "n2g", "n2g"),
    (None, "human_eval", "prepare_human_study"),
)


def producing_rule(path) -> str | None:
    """The workflow rule that writes ``path`` (a file under results/), or None when the layout is unknown."""
    parts = Path(path).parts
    if "results" not in parts:
        return None
    inner = parts[parts.index("results") + 1:-1]
    if "puzzles" in inner[:2] and Path(path).name == "puzzles.json":  # results/[<run>/]puzzles/<set>/
        return "puzzle_set"
    for top, folder, rule in _PRODUCERS:
        if folder in inner and (top is None or inner[:1] == (top,)):
            return rule
    return None


def rerun_hint(path) -> str:
    """How to fix a broken workflow output: delete it so that Snakemake rebuilds it."""
    rule = producing_rule(path)
    who = f"rule {rule} writes it" if rule else "the rule that wrote it rebuilds it"
    return f"delete {path} and rerun the workflow ({who})"


def one_line(text) -> str:
    """Collapse a (library) message onto one line."""
    return " ".join(str(text).split())


def read_parquet(path, columns=None, *, fix: str | None = None, error: type[Exception] = InputFileError):
    """``pyarrow.parquet.read_table`` that turns a missing, truncated or corrupt file (or missing columns) into
    one clear ``error`` naming the file and ``fix`` (default: delete it and rerun the rule that writes it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError as exc:
        raise error(f"{path} is missing; {fix or rerun_hint(path)}") from exc
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise error(f"{path}: not a readable Parquet file ({one_line(exc)}); it is truncated, corrupt or from "
                    f"another version: {fix or rerun_hint(path)}") from exc


def read_parquet_schema(path, *, fix: str | None = None, error: type[Exception] = InputFileError):
    """The schema (with metadata) from a Parquet footer; a bad file raises one clear ``error`` (see read_parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except FileNotFoundError as exc:
        raise error(f"{path} is missing; {fix or rerun_hint(path)}") from exc
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise error(f"{path}: not a readable Parquet file ({one_line(exc)}); it is truncated, corrupt or from "
                    f"another version: {fix or rerun_hint(path)}") from exc


def decode_utf8(data: bytes, path, *, what: str = "", fix: str | None = None,
                error: type[Exception] = InputFileError) -> str:
    """Decode a whole file's bytes strictly; invalid UTF-8 raises ``error`` naming the file, the byte offset and
    line of the first bad byte (``what`` qualifies the offset, e.g. " of the decompressed text") and the fix."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = 1 + data.count(b"\n", 0, exc.start)
        raise error(f"{path}: not valid UTF-8 at byte offset {exc.start}{what} (line {line}, byte "
                    f"{data[exc.start:exc.end].hex(' ')}); "
                    f"{fix or 'convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)'}") from exc


def read_json(path, *, fix: str | None = None, error: type[Exception] = InputFileError):
    """A whole JSON file, strictly (UTF-8, valid JSON); a bad file raises one clear ``error`` with ``fix``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise error(f"{path} is missing; {fix or rerun_hint(path)}") from exc
    text = decode_utf8(data, path, fix=fix or rerun_hint(path), error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}: column {exc.colno}); the file is "
                    f"truncated or corrupt: {fix or rerun_hint(path)}") from exc


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


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder beside ``path``; it replaces ``path`` only on success (never half a folder)."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _parquet_options(schema, kwargs: dict) -> dict:
    import pyarrow as pa

    kwargs.setdefault("compression", "zstd")
    # Byte-stream-split makes float32 activations compress (plain zstd gains ~nothing on float noise).
    leaves = [_leaf(f.type) for f in schema]
    if any(pa.types.is_floating(t) for t in leaves) and all(
            pa.types.is_floating(t) or pa.types.is_integer(t) for t in leaves):
        kwargs.setdefault("use_byte_stream_split", True)
        kwargs.setdefault("use_dictionary", False)
    return kwargs


def atomic_write_parquet(table, path, **kwargs) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **_parquet_options(table.schema, kwargs))


def gather_files(inputs: list, output) -> dict:
    """Concatenate a set's chunk files, in the order given, into ``output`` atomically: JSONL line by line, Parquet
    table by table through one writer (the first file's schema and metadata; memory bounded by one chunk, so a
    307,200-neuron set never sits in memory). pyarrow rather than polars: it keeps the files' schema metadata."""
    import pyarrow.parquet as pq

    with atomic_path(output) as tmp:
        if str(output).endswith(".parquet"):
            schema = read_parquet_schema(inputs[0])
            rows = 0
            with pq.ParquetWriter(tmp, schema, **_parquet_options(schema, {})) as writer:
                for path in inputs:
                    table = read_parquet(path)
                    writer.write_table(table.replace_schema_metadata(schema.metadata))
                    rows += table.num_rows
        else:
            rows = 0
            with open(tmp, "wb") as out:
                for path in inputs:
                    data = Path(path).read_bytes()  # one chunk at a time
                    if data and not data.endswith(b"\n"):
                        data += b"\n"
                    out.write(data)
                    rows += data.count(b"\n")
    return {"chunks": len(inputs), "rows": rows}


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


def canonical_json(value) -> str:
    """Key-sorted, compact, UTF-8 JSON (no NaN): equal data gives equal bytes (cache keys, prompt lines, hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def read_jsonl(path, *, fix: str | None = None, error: type[Exception] = InputFileError) -> list[dict]:
    """One JSON object per non-blank line, strictly: a truncated last line, a corrupt line or non-UTF-8 bytes raise
    ``error`` as ``path:line: not valid JSON (...)`` with ``fix`` (default: delete the file and rerun its rule)."""
    return [row for _, row in iter_jsonl(path, fix=fix, error=error)]


def iter_jsonl(path, *, fix: str | None = None, error: type[Exception] = InputFileError):
    """``(line number, object)`` of each non-blank line, streamed; errors as ``read_jsonl``."""
    offset = 0
    try:
        fh = open(path, "rb")
    except FileNotFoundError as exc:
        raise error(f"{path} is missing; {fix or rerun_hint(path)}") from exc
    with fh:
        for lineno, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path}:{lineno}: not valid UTF-8 at byte offset {start + exc.start} "
                            f"(byte {raw[exc.start:exc.end].hex(' ')}); the file is corrupt: "
                            f"{fix or rerun_hint(path)}") from exc
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                cut = "" if raw.endswith(b"\n") else ", the line is cut off: the file is truncated"
                raise error(f"{path}:{lineno}: not valid JSON ({exc.msg}: column {exc.colno}{cut}); "
                            f"{fix or rerun_hint(path)}") from exc
            if not isinstance(row, dict):
                raise error(f"{path}:{lineno}: not a JSON object (got {type(row).__name__}); "
                            f"{fix or rerun_hint(path)}")
            yield lineno, row


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
