"""Imported explanations: explanation sets that come from files (the paper's released CSVs, or any CSV/JSONL with
neuron ids and one column per format) instead of from an explainer. They are written as ordinary explanations
files (docs/data_contracts.md), so AdaCS, puzzles, simulation, the tables and the report treat them exactly as
generated ones.

Neuron files: columns ``layer`` and ``neuron`` (any case; a leading unnamed index column is ignored) and one
column per format (named as the format, or as ``columns`` maps it). Puzzle files (the paper's
``puzzles_*_results.csv``): ``Puzzle id`` = ``k:seedS`` (k the 1-based puzzle index in the puzzle file's order,
S the 1-based repeat, so sample S-1) and ``GT Explanation``, which must be the puzzle's ground truth. A cell is
kept byte for byte (the paper embeds explanations as they are). An empty cell is reported with its file and line
in the failures file, never guessed; a row that cannot be placed (no integer id, an unknown puzzle, a ground
truth that differs, a neuron given twice) stops the job with one line naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

log = logging.getLogger("autointerp.explain.imported")


class ImportedFileError(ValueError):
    """An imported explanation file cannot be read as one; the message names the file, the line and the fix."""


@dataclass
class ImportedSet:
    """The explanations of one file, per format, in the explanations contract's line layout."""

    lines: dict[str, list[dict]] = field(default_factory=dict)  # format -> explanation lines
    failures: dict[str, list[dict]] = field(default_factory=dict)  # format -> empty cells
    counts: dict[str, int] = field(default_factory=dict)


def _rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line where the row starts, {column: cell})]) of a CSV, or of a JSONL file (one object a line)."""
    if path.suffix == ".jsonl":
        rows, header = [], []
        for lineno, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ImportedFileError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or remove the line") from None
            if not isinstance(row, dict):
                raise ImportedFileError(f"{path}:{lineno}: each line must be a JSON object")
            header += [k for k in row if k not in header]
            rows.append((lineno, {k: "" if v is None else str(v) for k, v in row.items()}))
        return header, rows
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ImportedFileError(f"{path}: the file is empty; it needs a header row")
        rows, start = [], reader.line_num + 1
        for cells in reader:
            if len(cells) != len(header):
                raise ImportedFileError(f"{path}:{start}: {len(cells)} cells where the header has {len(header)}; "
                                        "a cell with a comma, quote or line break must be quoted")
            rows.append((start, dict(zip(header, cells))))
            start = reader.line_num + 1
    return header, rows


def _column(header: Sequence[str], name: str, path: Path, what: str) -> str:
    if name in header:
        return name
    folded = {h.strip().lower(): h for h in header}
    if name.strip().lower() in folded:
        return folded[name.strip().lower()]
    raise ImportedFileError(f"{path}: no column {name!r} for {what}; the columns are {[h for h in header if h]} "
                            f"(name the column in the import's `columns`)")


def _int(value: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ImportedFileError(f"{path}:{lineno}: {what} {value!r} is not an integer") from None


def _line(layer: int, neuron: int, fmt: str, sample: int, text: str, model: str, source: str, **more) -> dict:
    return {"layer": layer, "neuron": neuron, "format": fmt, "sample": sample, "sample_index": sample,
            "explanation": text, "raw_completion": text, "valid": True, "model": model, "finish_reason": None,
            "params": {}, "usage": {"prompt_tokens": 0, "completion_tokens": 0}, "cache_key": None,
            "prompt_hash": None, "source": source, **more}


def _add(result: ImportedSet, fmt: str, text: str, where: str, line: dict, key: dict) -> None:
    if text.strip():
        result.lines[fmt].append(line)
        result.counts["multiline_cells"] += "\n" in text.strip()
    else:
        result.failures[fmt].append({**key, "format": fmt, "kind": "invalid",
                                     "reason": f"empty cell at {where} (column {fmt})", "raw_completions": [text]})
        log.warning("%s: empty %s explanation; reported in the failures file", where, fmt)


def read_neuron_explanations(path, formats: Sequence[str], *, model: str, columns: dict[str, str] | None = None,
                             neurons: Iterable[tuple[int, int]] | None = None) -> ImportedSet:
    """One file's explanations of neurons, for ``formats``; with ``neurons`` (the neuron set) only those neurons,
    the others counted as ``not_in_set`` and the set's neurons absent from the file as ``missing``."""
    path = Path(path)
    header, rows = _rows(path)
    layer_col, neuron_col = (_column(header, name, path, "the neuron ids") for name in ("layer", "neuron"))
    cols = {f: _column(header, (columns or {}).get(f, f), path, f"format {f}") for f in formats}
    wanted = None if neurons is None else {(int(a), int(b)) for a, b in neurons}
    result = ImportedSet({f: [] for f in formats}, {f: [] for f in formats},
                         {"rows": len(rows), "not_in_set": 0, "multiline_cells": 0})
    seen: dict[tuple[int, int], int] = {}
    for lineno, row in rows:
        key = (_int(row[layer_col], path, lineno, "layer"), _int(row[neuron_col], path, lineno, "neuron"))
        if key in seen:
            raise ImportedFileError(f"{path}:{lineno}: layer {key[0]} neuron {key[1]} is already on line "
                                    f"{seen[key]}; keep one row per neuron")
        seen[key] = lineno
        if wanted is not None and key not in wanted:
            result.counts["not_in_set"] += 1
            continue
        for f in formats:
            text, where = row[cols[f]], f"{path.name}:{lineno}"
            _add(result, f, text, where, _line(*key, f, 0, text, model, where), {"layer": key[0], "neuron": key[1],
                                                                                  "sample": 0})
    result.counts["explained"] = len(seen) - result.counts["not_in_set"]
    result.counts["missing"] = len(wanted - set(seen)) if wanted is not None else 0
    for f in formats:
        result.lines[f].sort(key=lambda x: (x["layer"], x["neuron"]))
    return result


def read_puzzle_explanations(path, formats: Sequence[str], *, model: str, puzzles: Sequence[tuple[str, str]],
                             columns: dict[str, str] | None = None) -> ImportedSet:
    """One file's explanations of Neuron Puzzles (``puzzles``: (name, ground truth) in the puzzle file's order)."""
    path = Path(path)
    header, rows = _rows(path)
    id_col = _column(header, (columns or {}).get("puzzle_id", "Puzzle id"), path, "the puzzle ids")
    truth_col = _column(header, (columns or {}).get("ground_truth", "GT Explanation"), path, "the ground truths")
    cols = {f: _column(header, (columns or {}).get(f, f), path, f"format {f}") for f in formats}
    result = ImportedSet({f: [] for f in formats}, {f: [] for f in formats},
                         {"rows": len(rows), "not_in_set": 0, "multiline_cells": 0})
    seen: dict[tuple[int, int], int] = {}
    for lineno, row in rows:
        ident = row[id_col].strip()
        number, _, seed = ident.partition(":seed")
        k, s = _int(number, path, lineno, "puzzle number"), _int(seed or "1", path, lineno, "seed")
        if not 1 <= k <= len(puzzles):
            raise ImportedFileError(f"{path}:{lineno}: puzzle {ident!r}: the puzzle set has puzzles 1..{len(puzzles)}")
        name, truth = puzzles[k - 1]
        if row[truth_col] != truth:
            raise ImportedFileError(f"{path}:{lineno}: puzzle {ident!r} has ground truth {row[truth_col]!r}, but "
                                    f"puzzle {k} of the set ({name}) is {truth!r}: the file belongs to another "
                                    "puzzle file or order")
        if (k, s) in seen:
            raise ImportedFileError(f"{path}:{lineno}: puzzle {ident!r} is already on line {seen[(k, s)]}")
        seen[(k, s)] = lineno
        for f in formats:
            text, where = row[cols[f]], f"{path.name}:{lineno}"
            extra = {"puzzle": name, "ground_truth": truth}
            _add(result, f, text, where, _line(0, k - 1, f, s - 1, text, model, where, **extra),
                 {"layer": 0, "neuron": k - 1, "sample": s - 1, **extra})
    result.counts["explained"] = len({k for k, _ in seen})
    result.counts["samples"] = max((s for _, s in seen), default=0)
    result.counts["missing"] = len(puzzles) - result.counts["explained"]
    for f in formats:
        result.lines[f].sort(key=lambda x: (x["neuron"], x["sample"]))
    return result
