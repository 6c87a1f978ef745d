"""The paper_released preset end to end, offline, on the released files in ../shared (a subset of the random
interpretable neurons keeps it short; the imported files and the puzzles stay whole): no subject model or
activations are touched, Tables 3 and 4 match an independent recomputation (tools/recompute_released_tables.py:
csv + transformers + numpy, no autointerp code), and the coverage and paper-comparison tables say what they
should."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import sys
from itertools import combinations

import pytest
import yaml

from workflow_utils import ROOT, make_workdir, snakemake

SHARED = ROOT.parent / "shared" / "reference-data"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/reference-data is not present")]
SUBSET = 24  # the first neurons of neurons_to_evaluate.csv: layer 0's 20 and 4 of layer 1


def _recompute():
    spec = importlib.util.spec_from_file_location("recompute", ROOT / "tools" / "recompute_released_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["recompute"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = yaml.safe_load((ROOT / "config" / "presets" / "paper_released.yaml").read_text())
    tmp = tmp_path_factory.mktemp("released")
    with open(SHARED / "neurons_to_evaluate.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    subset = tmp / "subset.csv"
    with open(subset, "w", newline="") as fh:
        csv.writer(fh).writerows(rows[: SUBSET + 1])
    config["neuron_sets"] = {"random_interpretable": {"kind": "csv", "path": str(subset)},
                             "top20": config["neuron_sets"]["top20"]}
    for spec in config["imported_explanations"].values():
        spec["neuron_sets"] = {k: v for k, v in spec["neuron_sets"].items() if k in config["neuron_sets"]}
    config["released_dir"] = str(SHARED)
    reported = tmp / "reported.csv"  # made-up values, in a known order, to exercise the comparison
    reported.write_text("table,explainer,set,format,value\n" + "".join(
        f"3,gpt-3.5,random_interpretable,{f},{v}\n" for f, v in zip(
            ["Original", "Summary", "Highlight", "HighlightSummary", "AVHS"], [0.80, 0.90, 0.85, 0.88, 0.70])))
    config["paper_reported"] = str(reported)
    work = make_workdir(tmp, config)
    proc = snakemake(work, "--cores", "2", "all")
    assert proc.returncode == 0, proc.stderr[-4000:]
    (work / "console.txt").write_text(proc.stdout + proc.stderr)
    return work, subset


def _table(work, name) -> list[dict]:
    return list(csv.DictReader(open(work / "results" / name, newline="")))


def test_only_imports_and_embeddings_ran_and_released_files_are_pinned(run):
    from autointerp.common.released import FILES

    work, _ = run
    console = (work / "console.txt").read_text()
    for rule in ("import_explanations", "import_puzzle_explanations", "adacs_similarity", "puzzle_similarity",
                 "released_file"):
        assert f"rule {rule}:" in console, rule
    for rule in ("prepare_model", "extract_shard", "records", "explain:", "render_prompts", "simulate_score"):
        assert f"rule {rule}" not in console, rule  # no subject model, no activations, no explainer
    for path in (work / "data" / "released").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == FILES[path.name][1]
    assert "imported gpt-3.5 neuron set top20: 940 explained" in console


def test_tables_3_and_4_match_an_independent_recomputation(run):
    work, subset = run
    recompute = _recompute()
    embed = recompute.MiniLM()
    neurons = {(int(r["layer"]), int(r["neuron"])) for r in csv.DictReader(open(subset))}
    t3, t4 = recompute.table3(SHARED, embed, neurons), recompute.table4(SHARED, embed)
    assert t3["gpt-3.5"]["Original"][1] == SUBSET and 0 < t3["gpt-4"]["Original"][1] < SUBSET
    assert recompute.compare(work / "results", t3, t4) <= 1e-3  # n must agree exactly, means to 1e-3
    table6 = _table(work, "table6.csv")
    assert {"adacs[gpt-3.5/random_interpretable]", "adacs[gpt-4/random_interpretable]", "puzzles[gpt-3.5/official]",
            "puzzles[gpt-4/official]"} <= set(table6[0])


def test_coverage_says_what_is_computable(run):
    work, _ = run
    rows = {(r["explainer"], r["set"], r["format"]): r for r in _table(work, "table_imported.csv")}
    gpt4 = rows[("gpt-4", "random_interpretable", "Summary")]
    assert gpt4["evaluations"] == "adacs" and int(gpt4["missing"]) == SUBSET - int(gpt4["explained"])
    assert int(gpt4["with_reference"]) == int(gpt4["explained"]) and int(gpt4["not_in_set"]) == 240 - int(gpt4["explained"])
    top20 = rows[("gpt-3.5", "top20", "AVHS")]
    assert top20["evaluations"] == "" and "AdaCS not computable" in top20["note"] and top20["with_reference"] == ""
    puzzles = rows[("gpt-4", "official", "Original")]
    assert (puzzles["set_kind"], puzzles["rows"], puzzles["explained"]) == ("puzzle_set", "57", "19")


def test_paper_comparison_ranks_and_kendall_tau(run):
    work, _ = run
    rows = _table(work, "table_paper.csv")
    values = {r["format"]: r for r in rows if r["kind"] == "value" and r["table"] == "3"
              and r["explainer"] == "gpt-3.5"}
    ours = {f: float(r["value"]) for f, r in values.items()}
    paper = {f: float(r["paper_value"]) for f, r in values.items()}
    table3 = {r["format"]: float(r["random_interpretable_mean"]) for r in _table(work, "table3.csv")
              if r["kind"] == "format" and r["explainer"] == "gpt-3.5"}
    assert ours == pytest.approx(table3)
    pairs = list(combinations(sorted(ours), 2))  # Kendall's tau-a by counting pairs (no ties in these values)
    concordant = sum((ours[a] - ours[b]) * (paper[a] - paper[b]) > 0 for a, b in pairs)
    tau = (2 * concordant - len(pairs)) / len(pairs)
    agreement = next(r for r in rows if r["kind"] == "agreement" and r["table"] == "3" and r["explainer"] == "gpt-3.5")
    assert float(agreement["kendall_tau"]) == pytest.approx(tau)
    assert agreement["paper_best"] == "Summary" and agreement["paper_worst"] == "AVHS"
    assert agreement["best"] == max(ours, key=ours.get)
    assert "Kendall tau" in (work / "console.txt").read_text()
    gpt4 = next(r for r in rows if r["kind"] == "agreement" and r["table"] == "3" and r["explainer"] == "gpt-4")
    assert gpt4["kendall_tau"] in ("", "nan") and "fewer than 2 formats" in gpt4["note"]  # nothing reported


def test_every_written_column_is_documented(run):
    from workflow_utils import undocumented_columns

    work, _ = run
    assert undocumented_columns(work / "results", ROOT / "docs") == {}


def test_a_broken_imported_file_fails_with_one_line_and_writes_nothing(tmp_path):
    """Bad input: a neuron listed twice. The import job stops with the file and line; no explanations file."""
    (tmp_path / "set.csv").write_text("layer,neuron,explanation\n0,1, words.\n0,2, numbers.\n")
    (tmp_path / "bad.csv").write_text("Layer,Neuron,Original\n0,1,a thing\n0,1,another\n")
    config = {
        "subject": {"id": "smol", "model": "embedded:smollm2-135m-instruct"},  # shape known: nothing extracted
        "corpus": {"id": "pydocs", "source": "python_docs"},
        "extraction": {}, "prompt_formats": {"Original": {}}, "explainers": {},
        "imported_explanations": {"mine": {"model": "someone", "neuron_sets": {"s": {"path": str(tmp_path / "bad.csv")}}}},
        "neuron_sets": {"s": {"kind": "csv", "path": str(tmp_path / "set.csv")}},
        "embedders": {"minilm": {"provider": "local", "model": "all-minilm-l6-v2"}},
        "adacs": {"embedder": "minilm", "references": {"s": {"kind": "csv", "path": str(tmp_path / "set.csv")}}},
        "n2g": {"enabled": False},
    }
    work = make_workdir(tmp_path, config)
    proc = snakemake(work, "--cores", "1", "results/table3.csv")
    assert proc.returncode != 0
    line = next(x for x in proc.stderr.splitlines() if x.startswith("autointerp error in rule import_explanations"))
    assert line.endswith("bad.csv:3: layer 0 neuron 1 is already on line 2; keep one row per neuron")
    assert "Traceback" not in proc.stderr
    assert not list((work / "results").rglob("Original.jsonl"))  # nothing half-written
