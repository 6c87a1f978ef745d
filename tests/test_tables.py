"""Tables: paired cells (Tables 2-4, N2G metrics), Table 6 ranks of the formats only, comparison methods apart,
and the evaluation registry. Expected values are computed by hand from the fixtures."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from autointerp.tables import evaluations
from autointerp.tables.evaluations import Column
from autointerp.tables.explanation_similarity import table3, table4
from autointerp.tables.n2g_metrics import n2g_table
from autointerp.tables.ranking import rank_values, table6
from autointerp.tables.settings import Statistics, TablesSettings
from autointerp.tables.simulation_scores import table2

FORMATS = ["AVHS", "Highlight", "HighlightSummary", "Original", "Summary"]
STATS = Statistics(n_boot=500, seed=0, confidence_level=0.95, alpha=0.05)
SETTINGS = TablesSettings(formats=FORMATS, comparison_methods=["N2G", "TokenLookup"], statistics=STATS)
NAN = float("nan")


def _read(path) -> list[dict]:
    return list(csv.DictReader(open(path, encoding="utf-8")))


def _scores(path: Path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"layer": [0] * len(values), "neuron": list(range(len(values))),
                             "score": pa.array(values, pa.float64())}), path)


def _table2(tmp_path, per_format: dict, per_method: dict, sets=("s1",), neuron_sets=None):
    items, methods = [], []
    for s in sets:
        for fmt, values in per_format.items():
            path = tmp_path / "scores" / s / "expl" / "sim" / f"{fmt}.parquet"
            _scores(path, values)
            items.append({"neuron_set": s, "explainer": "expl", "simulator": "sim", "format": fmt, "path": str(path)})
        for m, values in per_method.items():
            path = tmp_path / "n2g" / s / f"{m}.parquet"
            _scores(path, values)
            methods.append({"neuron_set": s, "format": m, "path": str(path)})
    out = tmp_path / "results"
    out.mkdir(exist_ok=True)
    rows = table2(items, methods, out / "table2.csv", out / "table2_paired.csv", formats=FORMATS,
                  comparisons=["N2G", "TokenLookup"], statistics=STATS, neuron_sets=neuron_sets)
    return rows, out


def test_a_neuron_no_format_has_a_score_for_still_counts_as_missing(tmp_path):
    """Neuron 9 of the set got no score in any format (its explanations failed): it has no row anywhere, yet each
    format's cell counts it as missing, read from the neuron set."""
    from autointerp.tables.simulation_scores import read_neuron_sets

    sets = tmp_path / "neuron_sets" / "s1.csv"
    sets.parent.mkdir()
    sets.write_text("layer,neuron\n" + "".join(f"0,{n}\n" for n in (0, 1, 2, 3, 9)))
    rows, _ = _table2(tmp_path, PER_FORMAT, {}, neuron_sets=read_neuron_sets([sets]))
    by = {r["format"]: r for r in rows}
    for fmt in FORMATS:
        assert (by[fmt]["s1_n"], by[fmt]["s1_nan_dropped"]) == (3, 2)  # neuron 3 (NaN in Summary) and neuron 9
        assert by[fmt]["s1_nan_own"] == (2 if fmt == "Summary" else 1)
    assert by["Original"]["s1_mean"] == pytest.approx(0.2)  # the mean is unchanged: 9 has no value to pair


# Five formats on four neurons; Summary has no score for neuron 3. N2G beats every format (it would rank first if
# it were ranked) and has no score for neuron 0; TokenLookup is worst.
PER_FORMAT = {
    "Original": [0.10, 0.20, 0.30, 0.90],
    "Summary": [0.30, 0.40, 0.50, NAN],
    "Highlight": [0.20, 0.30, 0.40, 0.00],
    "HighlightSummary": [0.40, 0.50, 0.60, 0.00],
    "AVHS": [0.00, 0.10, 0.20, 0.80],
}
PER_METHOD = {"N2G": [NAN, 0.90, 0.90, 0.90], "TokenLookup": [0.0, 0.0, 0.05, 0.0]}


def test_pairing_drops_a_neuron_nan_in_one_format_from_every_format(tmp_path):
    rows, out = _table2(tmp_path, PER_FORMAT, PER_METHOD)
    by = {r["format"]: r for r in rows}
    # neurons 0-2 for every format (neuron 3 is NaN in Summary)
    assert by["Original"]["s1_mean"] == pytest.approx(0.2)  # not 0.375 over all four
    assert by["Summary"]["s1_mean"] == pytest.approx(0.4)
    assert by["AVHS"]["s1_mean"] == pytest.approx(0.1)
    assert by["HighlightSummary"]["s1_mean"] == pytest.approx(0.5)
    assert by["Original"]["s1_sem"] == pytest.approx(0.1 / math.sqrt(3))  # sd 0.1 over 3 neurons
    for fmt in FORMATS:
        assert by[fmt]["kind"] == "format"
        assert (by[fmt]["s1_n"], by[fmt]["s1_nan_dropped"]) == (3, 1)
        assert by[fmt]["s1_nan_own"] == (1 if fmt == "Summary" else 0)
    # N2G: the neurons finite for it and every format: 1 and 2
    assert by["N2G"]["kind"] == "comparison" and by["N2G"]["s1_mean"] == pytest.approx(0.9)
    assert (by["N2G"]["s1_n"], by["N2G"]["s1_nan_dropped"], by["N2G"]["s1_nan_own"]) == (2, 2, 1)
    assert (by["TokenLookup"]["s1_n"], by["TokenLookup"]["s1_mean"]) == (3, pytest.approx(0.05 / 3))
    assert [r["kind"] for r in rows] == ["format"] * 5 + ["comparison"] * 2  # formats first
    written = _read(out / "table2.csv")
    assert list(written[0])[:4] == ["kind", "explainer", "simulator", "format"]
    assert {r["format"]: r["s1_n"] for r in written}["Summary"] == "3"

    paired = _read(out / "table2_paired.csv")
    formats = [r for r in paired if r["kind"] == "format"]
    assert len(formats) == 10 and all(int(r["n"]) == 3 and int(r["nan_dropped"]) == 1 for r in formats)
    o_s = next(r for r in formats if (r["method_a"], r["method_b"]) == ("Original", "Summary"))
    assert float(o_s["mean_a"]) == pytest.approx(0.2) and float(o_s["mean_diff"]) == pytest.approx(-0.2)
    assert o_s["warning"]  # 3 neurons cannot give p <= 0.05
    comps = [r for r in paired if r["kind"] == "comparison"]
    assert len(comps) == 2 * 5
    n2g_orig = next(r for r in comps if (r["method_a"], r["method_b"]) == ("N2G", "Original"))
    assert int(n2g_orig["n"]) == 2 and float(n2g_orig["mean_b"]) == pytest.approx(0.25)  # Original on neurons 1, 2


def test_table6_ranks_five_formats_1_to_5_and_keeps_comparisons_apart(tmp_path):
    _, out = _table2(tmp_path, PER_FORMAT, PER_METHOD, sets=("s1", "s2"))
    columns = evaluations.evaluation_columns([str(out / "table2.csv"), str(out / "table2_paired.csv")])
    assert set(columns) == {"simulate[expl/sim/s1]", "simulate[expl/sim/s2]"}
    rows = table6(columns, FORMATS, out / "table6.csv", out / "table6_comparison.csv", out / "table6_columns.csv")
    assert [r["format"] for r in rows] == ["HighlightSummary", "Summary", "Highlight", "Original", "AVHS"]
    for name in columns:
        assert sorted(r[name] for r in rows) == [1, 2, 3, 4, 5]
    assert {r["format"]: r["average_rank"] for r in rows} == {"HighlightSummary": 1, "Summary": 2, "Highlight": 3,
                                                             "Original": 4, "AVHS": 5}
    assert all(r["n_evaluations"] == 2 for r in rows)
    written = _read(out / "table6.csv")
    assert {r["format"] for r in written} == set(FORMATS)  # N2G and TokenLookup are not ranked

    comparison = _read(out / "table6_comparison.csv")
    assert {r["method"] for r in comparison} == {"N2G", "TokenLookup"}
    assert len(comparison) == 2 * 2 * 5  # columns x methods x formats
    n2g = [r for r in comparison if r["method"] == "N2G" and r["column"] == "simulate[expl/sim/s1]"]
    best = [r for r in n2g if r["is_best_format"] == "True"]
    # on N2G's neurons (1, 2) HighlightSummary is best with mean 0.55; N2G is 0.9, so first among the formats
    assert [r["format"] for r in best] == ["HighlightSummary"] and float(best[0]["format_mean"]) == pytest.approx(0.55)
    assert float(best[0]["diff"]) == pytest.approx(0.35) and all(float(r["method_position"]) == 1 for r in n2g)
    assert all(int(r["n"]) == 2 and int(r["nan_dropped"]) == 2 for r in n2g)
    lookup = [r for r in comparison if r["method"] == "TokenLookup" and r["column"] == "simulate[expl/sim/s1]"]
    assert all(float(r["method_position"]) == 6 for r in lookup)  # worse than all five formats

    legend = {r["column"]: r for r in _read(out / "table6_columns.csv")}
    s1 = legend["simulate[expl/sim/s1]"]
    assert (s1["n"], s1["nan_dropped"], s1["n_formats"]) == ("3", "1", "5")
    assert s1["comparison_methods"] == "N2G;TokenLookup" and s1["evaluation"] == "simulate_score"


def _similarity(path: Path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_table3_and_table4_are_paired_over_units_every_format_has(tmp_path):
    three = {  # neuron -> similarity of its two samples
        "Original": {0: [0.5, 0.7], 1: [0.2, 0.2], 2: [0.9, 0.9]},
        "Summary": {0: [0.8, 0.8], 1: [NAN, NAN], 2: [0.1, 0.3]},  # neuron 1: no finite sample
    }
    paths3 = []
    for fmt, units in three.items():
        p = tmp_path / "similarity" / "rnd" / "expl" / f"{fmt}.parquet"
        _similarity(p, [{"layer": 0, "neuron": u, "format": fmt, "sample": i, "similarity": v,
                         "reference_share": 2 / 3, "reference_degenerate": True}
                        for u, vs in units.items() for i, v in enumerate(vs)])
        paths3.append(str(p))
    settings = TablesSettings(formats=["Original", "Summary"], comparison_methods=[], statistics=STATS)
    rows = {r["format"]: r for r in table3(paths3, tmp_path / "t3.csv", tmp_path / "t3p.csv", settings)}
    assert rows["Original"]["rnd_mean"] == pytest.approx((0.6 + 0.9) / 2)  # neurons 0 and 2
    assert rows["Summary"]["rnd_mean"] == pytest.approx((0.8 + 0.2) / 2)
    assert all((r["rnd_n"], r["rnd_nan_dropped"]) == (2, 1) for r in rows.values())
    assert (rows["Summary"]["rnd_nan_own"], rows["Original"]["rnd_nan_own"]) == (1, 0)
    assert rows["Original"]["average"] == pytest.approx(0.75)
    # the similarity job's verdict on the reference set travels into every row of its neuron set
    written = _read(tmp_path / "t3.csv")
    assert {(r["rnd_reference_degenerate"], r["rnd_reference_share"]) for r in written} == {("True", "0.666667")}
    paired3 = _read(tmp_path / "t3p.csv")
    assert len(paired3) == 1 and paired3[0]["n"] == "2" and paired3[0]["neuron_set"] == "rnd"

    four = {"Original": {"colors": [0.9], "of": [0.4], "an": [0.1]}, "Summary": {"colors": [0.7], "of": [0.6]}}
    paths4 = []
    for fmt, units in four.items():  # Summary has no line at all for puzzle "an"
        p = tmp_path / "puzzles" / "gen" / "similarity" / "expl" / f"{fmt}.parquet"
        _similarity(p, [{"puzzle": u, "format": fmt, "sample": 0, "similarity": v[0]} for u, v in units.items()])
        paths4.append(str(p))
    rows4 = {r["format"]: r for r in table4(paths4, tmp_path / "t4.csv", tmp_path / "t4p.csv", settings)}
    assert rows4["Original"]["mean"] == pytest.approx(0.65) and rows4["Summary"]["mean"] == pytest.approx(0.65)
    assert all((r["n"], r["nan_dropped"], r["kind"]) == (2, 1, "format") for r in rows4.values())
    assert (rows4["Summary"]["nan_own"], rows4["Original"]["nan_own"]) == (1, 0)
    header = next(csv.reader(open(tmp_path / "t4.csv")))
    assert header == ["kind", "puzzle_set", "explainer", "format", "mean", "sem", "n", "nan_dropped", "nan_own"]


def test_n2g_metrics_are_paired_across_methods(tmp_path):
    path = tmp_path / "n2g" / "rnd" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text("layer,neuron,method,score,firing_precision,firing_recall,firing_f1\n"
                    "0,1,N2G,0.5,1,0.5,0.6\n0,2,N2G,nan,0,0,0\n0,3,N2G,0.1,1,1,1\n"
                    "0,1,TokenLookup,0.3,1,1,1\n0,2,TokenLookup,0.2,1,1,1\n0,3,TokenLookup,,1,1,1\n")
    rows = {r["method"]: r for r in n2g_table([str(path)], tmp_path / "n2g.csv")}
    assert rows["N2G"]["mean_score"] == pytest.approx(0.5) and rows["TokenLookup"]["mean_score"] == pytest.approx(0.3)
    assert (rows["N2G"]["n_score"], rows["N2G"]["nan_dropped_score"]) == (1, 2)
    assert rows["N2G"]["mean_firing_precision"] == pytest.approx(2 / 3) and rows["N2G"]["n_firing_f1"] == 3
    assert rows["N2G"]["n_neurons"] == 3


def test_rank_values_ties_share_average_rank_and_nan_is_unranked():
    ranks = rank_values({"A": 0.3, "B": 0.5, "C": 0.3, "D": math.nan, "E": 0.1})
    assert ranks == {"B": 1, "A": 2.5, "C": 2.5, "E": 4}
    assert rank_values({"A": 1.0, "B": 2.0}, higher_is_better=False) == {"A": 1, "B": 2}
    assert rank_values({"A": math.nan}) == {}


def test_table6_average_rank_and_ties(tmp_path):
    rows = table6({"x": Column({"Original": 0.9, "Summary": 0.1, "AVHS": 0.5}),
                   "y": Column({"Original": 0.2, "Summary": 0.3, "AVHS": math.nan}),
                   "z": Column({"Original": 0.4, "Summary": 0.4, "AVHS": 0.4})}, FORMATS, tmp_path / "t6.csv")
    by = {r["format"]: r for r in rows}
    assert by["Original"]["average_rank"] == pytest.approx((1 + 2 + 2) / 3)
    assert by["Summary"]["average_rank"] == pytest.approx((3 + 1 + 2) / 3)
    assert by["AVHS"]["average_rank"] == 2 and by["AVHS"]["n_evaluations"] == 2  # (2 + 2) / 2; NaN in y
    assert by["AVHS"]["z"] == 2 and math.isnan(by["AVHS"]["y"])
    assert [r["format"] for r in rows] == ["Original", "AVHS", "Summary"]


def test_a_comparison_method_listed_as_a_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="not prompt formats"):
        table6({"x": Column({"Original": 0.2, "N2G": 0.9})}, FORMATS, tmp_path / "t6.csv")
    with pytest.raises(ValueError, match="neither a configured prompt format"):
        SETTINGS.kind_of("Sumary")
    assert (SETTINGS.kind_of("Summary"), SETTINGS.kind_of("N2G")) == ("format", "comparison")


def test_registering_an_evaluation_adds_a_table6_column(tmp_path, monkeypatch):
    table = tmp_path / "tableX.csv"
    table.write_text("name,value\nOriginal,2\nSummary,1\nBaseline,0.5\n")

    def columns(path):  # lower is better; Baseline is a comparison method, not ranked
        rows = _read(path)
        return {"my_eval": Column({r["name"]: float(r["value"]) for r in rows if r["name"] != "Baseline"}, False,
                                  n=7, nan_dropped=0,
                                  comparisons=({"method": "Baseline", "format": "Summary", "n": 7, "nan_dropped": 0,
                                                "method_mean": 0.5, "format_mean": 1.0, "diff": -0.5,
                                                "ci_low": NAN, "ci_high": NAN, "wilcoxon_p": NAN,
                                                "wilcoxon_method": "", "warning": ""},))}

    monkeypatch.setattr(evaluations, "EVALUATIONS", dict(evaluations.EVALUATIONS))
    evaluations.register(evaluations.Evaluation("mine", table.name, columns, enabled=lambda c: c.get("mine", False)))
    assert str(table) in evaluations.enabled_tables({"mine": True}, str(tmp_path))
    assert str(table) not in evaluations.enabled_tables({}, str(tmp_path))
    assert "results/table2_paired.csv" in evaluations.enabled_tables({"simulators": {"s": {}}})  # companions too
    # Another run's tables sit in its own folder.
    assert "results/x/table2.csv" in evaluations.enabled_tables({"simulators": {"s": {}}}, "results/x")
    cols = evaluations.evaluation_columns([str(table)])
    assert cols["my_eval"].evaluation == "mine"
    rows = table6(cols, FORMATS, tmp_path / "t6.csv", tmp_path / "t6c.csv", tmp_path / "t6l.csv")
    assert {r["format"]: r["my_eval"] for r in rows} == {"Summary": 1, "Original": 2}
    comparison = _read(tmp_path / "t6c.csv")
    assert [(r["method"], r["format"], float(r["method_position"])) for r in comparison] == [("Baseline", "Summary", 1)]
    assert _read(tmp_path / "t6l.csv")[0]["higher_is_better"] == "False"
    with pytest.raises(ValueError, match="already registered"):
        evaluations.register(evaluations.Evaluation("mine", str(table), columns))
    with pytest.raises(KeyError):
        evaluations.evaluation_columns([str(tmp_path / "unknown.csv")])


def test_settings_come_from_the_schema_defaults():
    from autointerp.common.config import validate_config

    root = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((root / "config" / "config.schema.yaml").read_text())
    defaults = {k: v["default"] for k, v in schema["properties"]["tables"]["properties"].items()}
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config.pop("tables", None)
    config["n2g"] = {"enabled": True}
    validate_config(config, root / "config" / "config.schema.yaml")
    settings = TablesSettings.from_config(config, {})
    assert settings.statistics.model_dump() == defaults
    assert settings.formats == sorted(config["prompt_formats"])
    assert settings.comparison_methods == ["N2G", "TokenLookup"]
    sent = settings.to_params("formats")
    assert TablesSettings.from_params(sent).statistics is None  # only the parts a rule reads travel
    with pytest.raises(ValueError, match="lack"):
        TablesSettings.from_params(sent).need("statistics")
