"""Ranking maths and the evaluation registry behind Table 6."""

from __future__ import annotations

import csv
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autointerp.tables import evaluations
from autointerp.tables.ranking import rank_formats, table2, table6


def test_rank_formats_ties_share_average_rank_and_nan_is_unranked():
    ranks = rank_formats({"A": 0.3, "B": 0.5, "C": 0.3, "D": math.nan, "E": 0.1})
    assert ranks == {"B": 1, "A": 2.5, "C": 2.5, "E": 4}
    assert rank_formats({"A": 1.0, "B": 2.0}, higher_is_better=False) == {"A": 1, "B": 2}


def test_table6_average_rank(tmp_path):
    rows = table6({"x": ({"A": 0.9, "B": 0.1, "C": 0.5}, True), "y": ({"A": 0.2, "B": 0.3, "C": math.nan}, True)},
                  tmp_path / "t6.csv")
    by = {r["format"]: r for r in rows}
    assert by["A"]["average_rank"] == pytest.approx((1 + 2) / 2)
    assert by["B"]["average_rank"] == pytest.approx((3 + 1) / 2)
    assert by["C"]["average_rank"] == 2 and by["C"]["n_evaluations"] == 1
    assert [r["format"] for r in rows] == ["A", "B", "C"]  # by average rank, ties (B, C at 2) by name


def _scores(path, values):
    pq.write_table(pa.table({"layer": [0] * len(values), "neuron": list(range(len(values))), "score": values}), path)


def test_table2_means_and_paired(tmp_path):
    base = tmp_path / "scores" / "set1" / "expl" / "sim"
    base.mkdir(parents=True)
    _scores(base / "Original.parquet", [0.1, 0.2, 0.3, float("nan")])
    _scores(base / "Summary.parquet", [0.3, 0.4, 0.5, 0.6])
    rows = table2([{"neuron_set": "set1", "explainer": "expl", "simulator": "sim", "format": f, "path": str(base / f"{f}.parquet")}
                   for f in ("Original", "Summary")], tmp_path / "t2.csv", tmp_path / "p.csv", n_boot=200)
    by = {r["format"]: r for r in rows}
    assert by["Original"]["set1_mean"] == pytest.approx(0.2) and by["Original"]["set1_nan"] == 1
    assert by["Summary"]["set1_mean"] == pytest.approx(0.45) and by["Summary"]["average"] == pytest.approx(0.45)
    paired = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert paired[0]["format_a"] == "Original" and int(paired[0]["n"]) == 3
    assert float(paired[0]["mean_diff"]) == pytest.approx(-0.2)


def test_registering_an_evaluation_adds_a_table6_column(tmp_path, monkeypatch):
    table = tmp_path / "tableX.csv"
    table.write_text("format,value\nOriginal,2\nSummary,1\n")

    def columns(path):
        return {"my_eval": ({r["format"]: float(r["value"]) for r in csv.DictReader(open(path))}, False)}

    monkeypatch.setattr(evaluations, "EVALUATIONS", dict(evaluations.EVALUATIONS))
    evaluations.register(evaluations.Evaluation("mine", str(table), columns, enabled=lambda c: c.get("mine", False)))
    assert str(table) in evaluations.enabled_tables({"mine": True})
    assert str(table) not in evaluations.enabled_tables({})
    rows = table6(evaluations.columns_for(str(table)), tmp_path / "t6.csv")
    assert {r["format"]: r["my_eval"] for r in rows} == {"Summary": 1, "Original": 2}  # lower is better here
    with pytest.raises(ValueError, match="already registered"):
        evaluations.register(evaluations.Evaluation("mine", str(table), columns))
