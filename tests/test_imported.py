"""Imported explanations: the loader on the paper's released files and on broken ones, the pinned released-file
copies, and the paper-comparison table. The preset end to end: tests/test_workflow_imported.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autointerp.common.released import FILES, ReleasedFileError, fetch_released
from autointerp.explain.imported import ImportedFileError, read_neuron_explanations, read_puzzle_explanations
from autointerp.tables.imported import agreement, paper_rows, read_reported

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference-data"
FORMATS = ["Original", "Summary", "Highlight", "HighlightSummary", "AVHS"]
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/reference-data is not present")


@needs_shared
@pytest.mark.parametrize("name, rows, first", [
    ("random_interpretable_GPT35_results.csv", 960, (0, 286)),
    ("random_interpretable_GPT4_results.csv", 240, (0, 286)),
    ("random_GPT35_results.csv", 940, (0, 426)),
    ("random_GPT4_results.csv", 240, (0, 426)),
    ("top20_GPT35_results.csv", 940, (0, 3481)),
    ("Top1k_GPT35_results.csv", 1000, (1, 2447)),  # a leading unnamed index column, lower-case ids
])
def test_released_neuron_files_load_with_every_format(name, rows, first):
    import csv

    result = read_neuron_explanations(SHARED / name, FORMATS, model="m")
    assert result.counts["rows"] == rows == result.counts["explained"] and result.counts["missing"] == 0
    with open(SHARED / name, newline="", encoding="utf-8") as fh:  # the file read independently
        table = list(csv.reader(fh))
    header, body = table[0], table[1:]
    for fmt in FORMATS:
        lines = result.lines[fmt]
        assert len(lines) == rows and not result.failures[fmt]
        by_id = {(x["layer"], x["neuron"]): x for x in lines}
        column = header.index(fmt)
        for cells in body[:: max(1, rows // 50)]:
            ids = [int(c) for c, h in zip(cells, header) if h.lower() in ("layer", "neuron")]
            assert by_id[tuple(ids)]["explanation"] == cells[column]  # byte for byte, leading space included
    assert first in by_id  # the file's first neuron
    assert result.lines["Original"][0]["source"].startswith(name + ":")


@needs_shared
@pytest.mark.parametrize("name", ["puzzles_GPT35_results.csv", "puzzles_GPT4_results.csv"])
def test_released_puzzle_files_load_as_19_puzzles_times_3_samples(name):
    puzzles = json.loads((SHARED / "puzzles.json").read_text())
    result = read_puzzle_explanations(SHARED / name, FORMATS, model="m",
                                      puzzles=[(p["name"], p["explanation"]) for p in puzzles.values()])
    assert result.counts["rows"] == 57 and result.counts["explained"] == 19 and result.counts["samples"] == 3
    for fmt in FORMATS:
        assert len(result.lines[fmt]) == 57
        assert {(x["neuron"], x["sample"]) for x in result.lines[fmt]} == {(k, s) for k in range(19) for s in range(3)}
    first = result.lines["Original"][0]
    assert first["puzzle"] == "colors" and first["ground_truth"] == "words related to colors and nothing else"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_empty_cells_are_reported_with_file_and_line(tmp_path):
    path = _write(tmp_path / "x.csv", 'Layer,Neuron,Original,Summary\n0,1,"a\nb",words\n2,3,,  \n4,5,ok,fine\n')
    result = read_neuron_explanations(path, ["Original", "Summary"], model="m", neurons=[(0, 1), (2, 3), (9, 9)])
    assert [x["neuron"] for x in result.lines["Original"]] == [1]  # (4, 5) is outside the set
    assert result.counts == {"rows": 3, "not_in_set": 1, "multiline_cells": 1, "explained": 2, "missing": 1}
    assert [f["reason"] for f in result.failures["Original"]] == ["empty cell at x.csv:4 (column Original)"]
    assert [f["reason"] for f in result.failures["Summary"]] == ["empty cell at x.csv:4 (column Summary)"]
    assert result.lines["Original"][0]["source"] == "x.csv:2"  # where the row starts (its cell spans 2 lines)


@pytest.mark.parametrize("text, message", [
    ("Layer,Neuron,Original\n0,1,a\n0,x,b\n", r"x.csv:3: neuron 'x' is not an integer"),
    ("Layer,Neuron,Original\n0,1,a\n0,1,b\n", r"x.csv:3: layer 0 neuron 1 is already on line 2"),
    ("Layer,Neuron,Original\n0,1,a,extra\n", r"x.csv:2: 4 cells where the header has 3"),
    ("Layer,Neuron,Summary\n0,1,a\n", r"no column 'Original' for format Original"),
    ("", r"x.csv: the file is empty"),
])
def test_malformed_files_stop_with_file_and_line(tmp_path, text, message):
    with pytest.raises(ImportedFileError, match=message):
        read_neuron_explanations(_write(tmp_path / "x.csv", text), ["Original"], model="m")


def test_jsonl_files_and_renamed_columns(tmp_path):
    path = _write(tmp_path / "x.jsonl", '{"layer": 1, "neuron": 2, "orig": " a."}\n\n{"layer": 1, "neuron": 3, "orig": null}\n')
    result = read_neuron_explanations(path, ["Original"], model="m", columns={"Original": "orig"})
    assert [(x["neuron"], x["explanation"]) for x in result.lines["Original"]] == [(2, " a.")]
    assert result.failures["Original"][0]["reason"] == "empty cell at x.jsonl:3 (column Original)"
    with pytest.raises(ImportedFileError, match=r"x.jsonl:1: not valid JSON"):
        read_neuron_explanations(_write(tmp_path / "x.jsonl", "{oops\n"), ["Original"], model="m")


def test_puzzle_rows_must_match_the_puzzle_files_ground_truth(tmp_path):
    puzzles = [("colors", "colors"), ("of", "after of")]
    ok = _write(tmp_path / "p.csv", "Puzzle id,GT Explanation,Original\n2:seed1,after of,x\n1:seed2,colors,y\n")
    result = read_puzzle_explanations(ok, ["Original"], model="m", puzzles=puzzles)
    assert [(x["puzzle"], x["sample"]) for x in result.lines["Original"]] == [("colors", 1), ("of", 0)]
    bad = _write(tmp_path / "q.csv", "Puzzle id,GT Explanation,Original\n1:seed1,numbers,x\n")
    with pytest.raises(ImportedFileError, match=r"q.csv:2: puzzle '1:seed1' has ground truth 'numbers'"):
        read_puzzle_explanations(bad, ["Original"], model="m", puzzles=puzzles)
    far = _write(tmp_path / "r.csv", "Puzzle id,GT Explanation,Original\n3:seed1,x,y\n")
    with pytest.raises(ImportedFileError, match=r"r.csv:2: puzzle '3:seed1': the puzzle set has puzzles 1..2"):
        read_puzzle_explanations(far, ["Original"], model="m", puzzles=puzzles)


@needs_shared
def test_released_files_are_copied_only_with_their_pinned_bytes(tmp_path, monkeypatch):
    name = "test_neurons.csv"
    out = fetch_released(name, tmp_path / "data" / name, str(SHARED))
    assert out["sha256"] == FILES[name][1] and (tmp_path / "data" / name).read_bytes() == (SHARED / name).read_bytes()
    tampered = tmp_path / "copy"
    tampered.mkdir()
    (tampered / name).write_bytes((SHARED / name).read_bytes() + b"\n")
    with pytest.raises(ReleasedFileError, match="is not the pinned"):
        fetch_released(name, tmp_path / "other" / name, str(tampered))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no local copy, offline: say where to put one
    with pytest.raises(ReleasedFileError, match="HF_HUB_OFFLINE.*released_dir"):
        fetch_released(name, tmp_path / "third" / name, str(tmp_path / "empty"))
    with pytest.raises(ReleasedFileError, match="unknown released file 'nope.csv'"):
        fetch_released("nope.csv", tmp_path / "x", None)


@needs_shared
def test_every_pinned_checksum_is_the_shared_copys(tmp_path):
    import hashlib

    for name, (_, sha) in FILES.items():
        assert hashlib.sha256((SHARED / name).read_bytes()).hexdigest() == sha, name


def test_rank_agreement_with_reported_values(tmp_path):
    ours = {"A": 0.5, "B": 0.4, "C": 0.3, "D": 0.2}
    same = agreement(ours, {"A": 9.0, "B": 8.0, "C": 7.0, "D": 6.0})
    assert same["kendall_tau"] == pytest.approx(1.0) and same["best_agrees"] and same["worst_agrees"]
    reverse = agreement(ours, {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0})
    assert reverse["kendall_tau"] == pytest.approx(-1.0) and reverse["best"] == "A" and reverse["paper_best"] == "D"
    one_swap = agreement(ours, {"A": 4.0, "B": 3.0, "C": 1.0, "D": 2.0})  # 5 of 6 pairs concordant: (5-1)/6
    assert one_swap["kendall_tau"] == pytest.approx(4 / 6) and one_swap["best_agrees"] and not one_swap["worst_agrees"]
    assert math.isnan(agreement(ours, {"A": 1.0})["kendall_tau"])

    reported = _write(tmp_path / "r.csv", "table,explainer,set,format,value\n3,e,s,A,0.9\n3,e,s,B,0.8\n")
    rows = paper_rows({("3", "e", "s"): {"A": 0.1, "B": 0.2}}, read_reported(reported))
    values = {r["format"]: r for r in rows if r["kind"] == "value"}
    assert values["A"]["rank"] == 2 and values["A"]["paper_rank"] == 1 and values["B"]["paper_value"] == 0.8
    assert [r["kendall_tau"] for r in rows if r["kind"] == "agreement"] == [pytest.approx(-1.0)]
    with pytest.raises(ValueError, match=r"r.csv:2: value 'high' is not a number"):
        read_reported(_write(tmp_path / "r.csv", "table,explainer,set,format,value\n3,e,s,A,high\n"))


def test_shipped_reported_values_file_has_the_right_columns():
    path = Path(__file__).resolve().parents[1] / "config" / "presets" / "paper_reported.csv"
    assert read_reported(path) is not None and path.read_text().splitlines()[0] == "table,explainer,set,format,value"
