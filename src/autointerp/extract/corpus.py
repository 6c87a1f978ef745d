"""Corpus: text sources cut into fixed-length excerpts of subject-model tokens, stored once as Parquet.

Sources (``corpus.source`` in config):
- ``text_files``: local plain-text files (``files: [{path: glob, format: plain|fortune}]``, ``.gz`` allowed).
  ``fortune`` splits on lines holding a single ``%`` (Debian ``fortunes``); ``plain`` is one document per file.
- ``python_docs``: the topic help shipped with CPython (``pydoc_data.topics``): always present, no install.
- ``jsonl``: local JSON-lines files with a text field.
- ``huggingface``: a Hugging Face dataset by name (needs network or a populated HF cache).

Local files are read strictly as UTF-8: a file that is not (e.g. Latin-1) is refused with its byte offset and the
fix (convert it, or list it under ``corpus.exclude``), never decoded with replacement characters.

Excerpts are consecutive non-overlapping windows over the concatenated token stream (documents end with a
blank line), deduplicated, then drawn in a seeded random order. No BOS token is prepended: records show
exactly the excerpt's own tokens, as in the reference's 64-token GPT-2 excerpts.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import re
from pathlib import Path
from zlib import error as zlib_error
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from autointerp.common.io import atomic_write_parquet, decode_utf8, iter_jsonl, one_line, read_parquet


class CorpusError(ValueError):
    """Bad corpus configuration or content; the message says what and how to fix it."""


_FORTUNE_SEP = re.compile(r"^%\s*$", re.M)


def _utf8_fix(path: Path, jsonl: bool = False) -> str:
    if path.suffix == ".gz":
        convert = f"zcat {path} | iconv -f latin1 -t utf-8 | gzip > {path.name[:-3]}.utf8.gz"
    else:
        convert = f"iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}"
    if jsonl:
        return f"convert it to UTF-8 (e.g. {convert}, naming the copy in corpus.paths) or drop it from corpus.paths"
    return (f"convert it to UTF-8 (e.g. {convert}, naming the copy in corpus.files) "
            f"or list {path} under corpus.exclude")


def _read_text(path: Path) -> str:
    """A corpus file's text, strictly UTF-8 (never with replacement characters): bad bytes raise CorpusError."""
    gz = path.suffix == ".gz"
    try:
        if gz:
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib_error) as exc:  # unreadable, not gzip, or a truncated .gz
        raise CorpusError(f"corpus file {path} cannot be read ({one_line(exc) or type(exc).__name__}): repair or "
                          "replace it, or list it under corpus.exclude") from exc
    return decode_utf8(data, f"corpus file {path}", what=" of the decompressed text" if gz else "",
                       fix=_utf8_fix(path), error=CorpusError)


def iter_documents(spec: dict) -> Iterator[str]:
    """Yield the corpus documents in a fixed, reproducible order."""
    source = spec["source"]
    if source == "text_files":
        excluded = {Path(p) for pattern in spec.get("exclude", []) for p in glob.glob(str(pattern))}
        found = 0
        for entry in spec.get("files", []):
            # Debian's fortune folders also hold binary .dat index files and .u8 symlinks.
            paths = sorted(
                Path(p) for p in glob.glob(str(entry["path"]))
                if Path(p).is_file() and not Path(p).is_symlink() and Path(p).suffix != ".dat"
                and Path(p) not in excluded
            )
            found += len(paths)
            for path in paths:
                text = _read_text(path)
                if entry.get("format", "plain") == "fortune":
                    yield from (d.strip("\n") for d in _FORTUNE_SEP.split(text) if d.strip())
                else:
                    yield text
        if not found:
            raise CorpusError(
                f"corpus.files {[e.get('path') for e in spec.get('files', [])]} matched no files. For the default "
                "corpus install Debian's 'fortunes' and 'jargon-text' packages (make setup does this as root), "
                "or set corpus.source: python_docs (no install needed)"
            )
    elif source == "python_docs":
        import pydoc_data.topics as topics

        for key in sorted(topics.topics):
            yield topics.topics[key]
    elif source == "jsonl":
        field = spec.get("text_field", "text")
        found = 0
        for pattern in spec.get("paths", []):
            for path in sorted(glob.glob(str(pattern))):
                found += 1
                yield from _jsonl_texts(Path(path), field)
        if not found:
            raise CorpusError(f"corpus.paths {list(spec.get('paths', []))} matched no files: fix the globs "
                              "(JSON-lines files with one object per line)")
    elif source == "huggingface":
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover - datasets ships with transformer-lens
            raise CorpusError("corpus.source huggingface needs the 'datasets' package") from exc
        name = spec.get("dataset")
        try:
            ds = datasets.load_dataset(name, spec.get("dataset_config"), split=spec.get("split", "train"),
                                       streaming=True)
        except Exception as exc:
            raise CorpusError(
                f"cannot load Hugging Face dataset {name!r} (corpus.dataset): {one_line(exc)}. Offline "
                "(HF_HUB_OFFLINE=1) only cached datasets load; use corpus.source text_files or python_docs instead"
            ) from exc
        field = spec.get("text_field", "text")
        limit = spec.get("max_documents")
        for i, row in enumerate(ds):
            if limit is not None and i >= limit:
                break
            yield str(row[field])
    else:
        raise CorpusError(f"unknown corpus.source {source!r}")


def _jsonl_texts(path: Path, field: str) -> Iterator[str]:
    """The ``field`` of each line of a JSON-lines corpus file, strictly (UTF-8, valid JSON objects)."""
    fix = f"each line must be a UTF-8 JSON object: repair the line, or {_utf8_fix(path, jsonl=True)}"
    for lineno, row in iter_jsonl(path, fix=fix, error=CorpusError):
        if field not in row:
            raise CorpusError(f"{path}:{lineno}: no field {field!r} (set corpus.text_field to the field that "
                              "holds the text)")
        yield str(row[field])


def cut_excerpts(token_streams: Iterable[list[int]], excerpt_tokens: int) -> np.ndarray:
    """Concatenate token ids of all documents and cut them into non-overlapping windows."""
    chunks = [np.asarray(ids, dtype=np.int64) for ids in token_streams if len(ids)]
    if not chunks:
        return np.zeros((0, excerpt_tokens), dtype=np.int64)
    flat = np.concatenate(chunks)
    n = len(flat) // excerpt_tokens
    return flat[: n * excerpt_tokens].reshape(n, excerpt_tokens)


def build_corpus(spec: dict, tokenizer, *, max_windows_factor: int = 4) -> pa.Table:
    """Tokenise documents, cut, deduplicate and draw ``n_excerpts`` windows in a seeded order.

    Tokenisation stops once ``max_windows_factor * n_excerpts`` windows exist, so a huge corpus is not
    tokenised in full just to sample a few thousand excerpts (the draw is over that prefix).
    """
    length = int(spec["excerpt_tokens"])
    n_wanted = int(spec["n_excerpts"])
    budget = max_windows_factor * n_wanted * length

    seen = {"documents": 0, "tokens": 0}

    def streams() -> Iterator[list[int]]:
        for doc in iter_documents(spec):
            if not doc.strip():
                continue
            ids = tokenizer(doc + "\n\n", add_special_tokens=False)["input_ids"]
            seen["documents"] += 1
            seen["tokens"] += len(ids)
            yield ids
            if seen["tokens"] >= budget:
                return

    windows = cut_excerpts(streams(), length)
    if len(windows) == 0:
        name = spec.get("id")
        label = f"corpus {name!r} (corpus.id)" if name else "the corpus"
        what = {
            "text_files": "add or fix corpus.files (and check corpus.exclude)",
            "jsonl": "add text to the files of corpus.paths (or check corpus.text_field)",
            "huggingface": "check corpus.dataset, corpus.split and corpus.max_documents",
        }.get(spec.get("source"), "choose another corpus.source")
        raise CorpusError(
            f"{label} is empty: its {seen['documents']} non-blank document(s) gave "
            f"{seen['tokens']} tokens, fewer than one excerpt of corpus.excerpt_tokens={length}; {what}, "
            "or lower corpus.excerpt_tokens"
        )
    _, first = np.unique(windows, axis=0, return_index=True)
    windows = windows[np.sort(first)]
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    order = rng.permutation(len(windows))[:n_wanted]
    chosen = windows[order]
    flat = pa.array(chosen.reshape(-1).astype(np.int32), type=pa.int32())
    table = pa.table(
        {
            "excerpt_id": pa.array(np.arange(len(chosen), dtype=np.int64)),
            "token_ids": pa.FixedSizeListArray.from_arrays(flat, length),
        }
    )
    digest = hashlib.sha256(chosen.astype(np.int32).tobytes()).hexdigest()
    meta = {
        "autointerp.kind": "corpus",
        "autointerp.excerpt_tokens": str(length),
        "autointerp.n_windows_available": str(len(windows)),
        "autointerp.sha256": digest,
        "autointerp.spec": json.dumps(spec, sort_keys=True, default=str),
    }
    return table.replace_schema_metadata(meta)


def write_corpus(spec: dict, tokenizer, path) -> pa.Table:
    table = build_corpus(spec, tokenizer)
    atomic_write_parquet(table, path)
    return table


def read_token_ids(path) -> np.ndarray:
    """(n_excerpts, excerpt_tokens) int64 array; row i is excerpt_id i."""
    table = read_parquet(path, columns=["excerpt_id", "token_ids"])
    ids = table.column("excerpt_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise CorpusError(f"{path}: excerpt_id must be 0..n-1 in order; delete it and rerun the workflow "
                          "(rule build_corpus writes it)")
    col = table.column("token_ids").combine_chunks()
    length = col.type.list_size
    return col.flatten().to_numpy().astype(np.int64).reshape(len(ids), length)
