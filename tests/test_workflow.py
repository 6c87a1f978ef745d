"""The Snakemake workflow end to end on a tiny config, its lint, SLURM dry run and its error paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from fake_scorer import ScriptedScorers
from fake_simulator import simulators_script
from loopback_server import LoopbackServer
from workflow_utils import (PLANTED_KEY, ROOT, copy_run, loopback_roles, make_workdir, snakemake, tiny_config,
                            undocumented_columns, validated)

pytestmark = pytest.mark.slow

# The server counts usage with cl100k as a real server would (what the cost estimate is compared against); the
# priced runs are copies of the finished run with these prices on every role.
PRICES = {"price_input_per_1m": 1.0, "price_output_per_1m": 4.0}


SCORERS = ScriptedScorers()


@pytest.fixture(scope="module")
def server():
    def script(path, body):
        out = simulators_script(path, body)
        return out if out is not None else SCORERS(path, body)

    with LoopbackServer(script=script, usage_encoding="cl100k_base") as srv:
        yield srv


@pytest.fixture(scope="module")
def finished(tmp_path_factory, embedded_model_dir, server):
    # Three corpus shards and a merge job per layer: the rest of the run reads the merged activations.
    config = tiny_config(**loopback_roles(server.base_url))
    config["extraction"].update(shards=3, layers_per_merge=1)
    work = make_workdir(tmp_path_factory.mktemp("run"), config, embedded_model_dir)
    SCORERS.root = work / "results"  # the perfect scorer reads the held-out records' true activations there
    proc = snakemake(work, "--cores", "2", "all")  # the main command: every table, the report and the export
    assert proc.returncode == 0, proc.stderr[-4000:]
    (work / "console.txt").write_text(proc.stdout + proc.stderr)
    return work


def _ledger_cost(*roots) -> dict[str, float]:
    """Actual spend per stage under one run's folders: the usage files' ledger totals (cache hits cost 0)."""
    stages = {"explain": "explain", "simulate": "simulate_score", "embed": "similarity", "detection": "detection",
              "fuzzing": "fuzzing"}
    out: dict[str, float] = {}
    for path in (p for root in roots for p in root.rglob("*.json") if "usage" in p.parts):
        stage = path.parts[path.parts.index("usage") + 1]
        name = stages[stage] + ("_puzzles" if "puzzles" in path.parts and stage == "explain" else "")
        out[name] = out.get(name, 0.0) + json.loads(path.read_text())["totals"]["cost_usd"]
    return out


def _estimate(path) -> dict[str, float]:
    import csv

    out: dict[str, float] = {}
    for row in csv.DictReader(open(path)):
        stage = {"adacs_similarity": "similarity", "puzzle_similarity": "similarity"}.get(row["stage"], row["stage"])
        out[stage] = out.get(stage, 0.0) + float(row["usd"])
    return out


def _check_estimate(estimate: dict, actual: dict) -> None:
    assert estimate.pop("total") == pytest.approx(sum(estimate.values()))
    assert set(estimate) == set(actual) == {"explain", "explain_puzzles", "simulate_score", "similarity", "detection",
                                            "fuzzing"}
    assert sum(actual.values()) > 0  # priced calls were really made and billed
    assert abs(sum(actual.values()) - sum(estimate.values())) <= 0.10 * sum(estimate.values()), (estimate, actual)
    for stage in ("explain", "simulate_score", "detection", "fuzzing"):  # the stages that carry the cost
        assert abs(actual[stage] - estimate[stage]) <= 0.10 * estimate[stage], (stage, estimate, actual)


def test_jobs_print_what_they_did(finished):
    console = (finished / "console.txt").read_text()
    assert "cost estimate (results/cost_estimate.csv): $0.00 for " in console  # printed for the user
    assert "explain rnd/loop/Original: 3/3 neurons explained; 0 calls failed, 0 samples without" in console
    assert "simulate_score rnd/loop/loop/Summary: 3/3 explanations scored; 0 failed" in console
    assert "Loading weights" not in console and "it/s]" not in console  # no model-loading bars between the lines
    extract = (finished / "logs" / "smol" / "pydocs" / "extract_shard" / "000of003.log").read_text()
    assert "extract_shard 1/3 (" in extract and " batches, " in extract and " tokens/s" in extract
    log = (finished / "logs" / "smol" / "pydocs" / "simulate" / "rnd" / "loop" / "loop" / "Summary.log").read_text()
    assert "simulate_score rnd/loop/loop/Summary: 30/30 calls (0 cached, 0 failed)" in log  # progress k/N


def test_outputs_follow_the_contract(finished):
    run = finished / "results" / "smol" / "pydocs"
    manifest = json.loads((run / "activations" / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["0", "29"]
    shard = pq.read_table(run / "activations" / manifest["shards"]["29"])
    assert shard.num_rows == 1536
    assert shard.schema.field("top_activations").type.list_size == 20
    assert shard.schema.field("top_activations").type.value_type.list_size == 32
    meta = shard.schema.metadata
    assert meta[b"autointerp.hook"] == b"blocks.29.mlp.hook_post"
    for name in ("rnd", "top"):
        records = pq.read_table(run / "records" / f"{name}.parquet").to_pylist()
        by_neuron = {}
        for r in records:
            by_neuron.setdefault((r["layer"], r["neuron"]), {}).setdefault(r["split"], set()).add(r["excerpt_id"])
        for splits in by_neuron.values():
            assert len(splits["train"]) == 5 and len(splits["valid"]) == 10
            assert not splits["train"] & splits["valid"]
    assert len({(r["layer"], r["neuron"]) for r in pq.read_table(run / "records" / "top.parquet").to_pylist()}) == 2
    assert sorted(p.name for p in (finished / "logs" / "smol" / "pydocs" / "extract_shard").iterdir()) == [
        "000of003.log", "001of003.log", "002of003.log"]
    assert not (run / "activation_shards").exists() or not any((run / "activation_shards").iterdir())  # temp()


def test_sharded_extraction_equals_one_pass_byte_for_byte(finished, tmp_path):
    """The run's 3 shard jobs + 2 merge jobs wrote the bytes of one extraction job over the whole corpus."""
    from autointerp.extract.activations import run_extract_shard, run_merge_activations

    run = finished / "results" / "smol" / "pydocs"
    config = validated(yaml.safe_load((finished / "config" / "config.yaml").read_text()))
    s, extraction = config["subject"], {**config["extraction"], "shards": 1, "layers_per_merge": None}
    run_extract_shard(model_dir=finished / "data" / "models" / "smol", corpus_path=run.parent / "corpus" /
                      "pydocs.parquet", out_dir=tmp_path / "shard", shard=0, shards=1, layers=s["layers"],
                      hook=s["hook"], batch_size=s["batch_size"], extraction=extraction, threads=2)
    run_merge_activations(shard_dirs=[tmp_path / "shard"], out_dir=tmp_path / "merged", group="layers-all",
                          layers_per_merge=None, hook=s["hook"], extraction=extraction)
    manifest = json.loads((run / "activations" / "manifest.json").read_text())
    assert manifest["shards"] == {"0": "layers000-000/layer000.parquet", "29": "layers029-029/layer029.parquet"}
    for layer, rel in manifest["shards"].items():
        single = (tmp_path / "merged" / f"layer{int(layer):03d}.parquet").read_bytes()
        assert (run / "activations" / rel).read_bytes() == single, layer


def test_prompts_and_table1(finished):
    import csv

    run = finished / "results" / "smol" / "pydocs"
    lines = [json.loads(x) for x in (run / "prompts" / "rnd" / "loop" / "Summary.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    assert {"layer", "neuron", "format", "messages", "text", "prompt_tokens", "cutoff", "omitted_few_shot_records",
            "prompt_hash"} <= set(lines[0])
    assert lines[0]["messages"][-1]["content"].endswith("the main thing this neuron does is find")
    rows = list(csv.DictReader(open(finished / "results" / "table1.csv")))
    assert len(rows) == 2 * 5
    by = {(r["neuron_set"], r["format"]): r for r in rows}
    assert float(by[("rnd", "Original")]["ratio_vs_original"]) == 1.0
    for fmt in ("Summary", "Highlight", "HighlightSummary", "AVHS"):
        # every new format is shorter than Original, as in the paper's Table 1
        assert float(by[("rnd", fmt)]["mean_prompt_tokens"]) < float(by[("rnd", "Original")]["mean_prompt_tokens"])


def test_rerun_does_nothing_and_makes_no_requests(finished, server):
    before = server.count()
    proc = snakemake(finished, "--cores", "2", "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr
    # forcing the API rules re-runs them from the response cache: zero requests
    proc = snakemake(finished, "--cores", "2", "--forcerun", "explain", "simulate_score", "results/table6.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.count() == before


def test_planted_key_never_written(finished):
    leaks = []
    for path in finished.rglob("*"):
        if path.is_file() and "src" not in path.relative_to(finished).parts[:1]:
            try:
                if PLANTED_KEY.encode() in path.read_bytes():
                    leaks.append(str(path.relative_to(finished)))
            except OSError:
                pass
    assert leaks == []
    assert any((finished / ".cache" / "llm").rglob("*.json"))  # the cache was really written (and searched)


def test_explanations_scores_and_tables(finished):
    import csv

    run = finished / "results" / "smol" / "pydocs"
    lines = [json.loads(x) for x in (run / "explanations" / "rnd" / "loop" / "AVHS.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(line["valid"] and line["explanation"] for line in lines)
    assert {"layer", "neuron", "format", "explanation", "raw_completion", "model", "params", "usage",
            "cache_key"} <= set(lines[0])
    scores = pq.read_table(run / "scores" / "rnd" / "loop" / "loop" / "AVHS.parquet").to_pylist()
    assert len(scores) == 3
    preds = pq.read_table(run / "simulations" / "rnd" / "loop" / "loop" / "AVHS.parquet").to_pylist()
    assert len(preds) == 3 * 10 * 32
    # recompute each expected value from its stored distribution, and the pooled score from the predictions
    import numpy as np
    for p in preds[:200]:
        if p["flag"] == "ok":
            assert p["expected_value"] == pytest.approx(sum(k * q for k, q in enumerate(p["distribution"])), abs=1e-9)
    first = scores[0]
    mine = [p for p in preds if (p["layer"], p["neuron"]) == (first["layer"], first["neuron"])]
    ok = [p for p in mine if p["expected_value"] is not None]
    assert first["score"] == pytest.approx(np.corrcoef([p["true_activation"] for p in ok],
                                                       [p["expected_value"] for p in ok])[0, 1], abs=1e-6)
    table2 = list(csv.DictReader(open(finished / "results" / "table2.csv")))
    formats = {"Original", "Summary", "Highlight", "HighlightSummary", "AVHS"}
    assert {r["format"] for r in table2} == formats | {"N2G", "TokenLookup"}
    assert all(int(r["rnd_n"]) + int(r["rnd_nan_dropped"]) == 3 for r in table2)  # NaN scores are counted apart
    fmt_rows = [r for r in table2 if r["kind"] == "format"]
    assert len({r["rnd_n"] for r in fmt_rows}) == 1  # paired: every format's mean is over the same neurons
    table6 = list(csv.DictReader(open(finished / "results" / "table6.csv")))
    assert {r["format"] for r in table6} == formats  # formats ranked among formats only
    ranks = sorted(float(r["average_rank"]) for r in table6)
    assert ranks[0] >= 1 and ranks[-1] <= 5
    for column in [k for k in table6[0] if k.startswith(("simulate[", "adacs[", "puzzles["))]:
        ranked = [float(r[column]) for r in table6 if r[column] != "nan"]
        assert sum(ranked) == sum(range(1, len(ranked) + 1)), column  # ranks 1..n (ties share the average)
    comparison = list(csv.DictReader(open(finished / "results" / "table6_comparison.csv")))
    assert {r["method"] for r in comparison} == {"N2G", "TokenLookup"}
    cost = list(csv.DictReader(open(finished / "results" / "cost_estimate.csv")))
    calls = {}
    for row in cost[:-1]:
        calls[row["stage"]] = calls.get(row["stage"], 0) + int(row["calls"])
    assert cost[-1]["stage"] == "total" and int(cost[-1]["calls"]) == sum(calls.values())
    # 5 neurons x 5 formats, + the reference explainer on the 3 neurons of its AdaCS set; 10 valid records each
    assert calls["explain"] == 5 * 5 + 3 and calls["simulate_score"] == 5 * 5 * 10
    assert set(calls) == {"explain", "explain_puzzles", "simulate_score", "adacs_similarity", "puzzle_similarity",
                          "detection", "fuzzing"}
    assert calls["detection"] == calls["fuzzing"] == 3 * 5  # one request per explanation and kind, set rnd only
    assert {k for k in table6[0] if k.startswith(("adacs[", "puzzles["))} >= {"adacs[loop/rnd]", "puzzles[loop/gen]"}


def _csv(path) -> list[dict]:
    import csv

    return list(csv.DictReader(open(path)))


def test_a_perfect_scorer_scores_1_on_held_out_records_with_floors_beside_every_figure(finished):
    """The scripted perfect scorer (it knows the true labels) gets balanced accuracy 1.0 in every file and table;
    its examples are held-out records only; the floors stand beside every figure (tables, Table 6, console)."""
    run = finished / "results" / "smol" / "pydocs"
    records = pq.read_table(run / "records" / "rnd.parquet").to_pylist()
    train = {(r["layer"], r["neuron"]): set() for r in records}
    for r in records:
        if r["split"] == "train":
            train[(r["layer"], r["neuron"])].add(r["excerpt_id"])
    for kind in ("detection", "fuzzing"):
        rows = pq.read_table(run / kind / "rnd" / "loop" / "perfect" / "AVHS.parquet").to_pylist()
        assert len(rows) == 3
        for row in rows:
            assert row["balanced_accuracy"] == row["accuracy"] == 1.0 and row["n_unparseable"] == 0
            assert not set(row["excerpt_ids"]) & train[(row["layer"], row["neuron"])]  # no leakage
            assert row["n_positive"] == sum(row["labels"]) and row["answers"] == row["labels"]
            assert row["accuracy_always_yes"] + row["accuracy_always_no"] == pytest.approx(1.0)
            assert row["balanced_accuracy_random_low"] < 0.5 < row["balanced_accuracy_random_high"]
        table = _csv(finished / "results" / f"table_{kind}.csv")
        assert {r["format"] for r in table} == {"Original", "Summary", "Highlight", "HighlightSummary", "AVHS"}
        assert "top_mean" not in table[0]  # the scorer scores the sets it names (neuron_sets: [rnd])
        for r in table:
            assert float(r["rnd_mean"]) == 1.0 and float(r["rnd_unparseable"]) == 0
            assert float(r["rnd_floor_always_yes"]) == float(r["rnd_floor_always_no"]) == 0.5
            assert float(r["rnd_floor_random_low"]) < 0.5 < float(r["rnd_floor_random_high"])
        metrics = _csv(finished / "results" / f"table_{kind}_metrics.csv")
        assert {m["metric"] for m in metrics} == {"accuracy", "balanced_accuracy", "precision", "recall", "f1"}
        for m in metrics:
            assert float(m["mean"]) == 1.0 and int(m["n_unparseable"]) == 0
            if m["metric"] == "accuracy":  # per neuron, always-yes and always-no accuracy add up to 1
                assert float(m["floor_always_yes"]) + float(m["floor_always_no"]) == pytest.approx(1.0)
            if m["metric"] == "recall":
                assert (float(m["floor_always_yes"]), float(m["floor_always_no"])) == (1.0, 0.0)
    table6 = _csv(finished / "results" / "table6.csv")
    assert "detection[loop/perfect/top]" not in table6[0]
    for column in ("detection[loop/perfect/rnd]", "fuzzing[loop/perfect/rnd]"):
        assert all(float(r[column]) == 3.0 for r in table6)  # five formats tied at 1.0 share the ranks 1..5
    legend = {r["column"]: r for r in _csv(finished / "results" / "table6_columns.csv")}
    assert float(legend["detection[loop/perfect/rnd]"]["chance_always_no"]) == 0.5
    assert float(legend["fuzzing[loop/perfect/rnd]"]["chance_random_low"]) < 0.5
    assert legend["simulate[loop/loop/rnd]"]["chance_random"] == ""
    console = (finished / "console.txt").read_text()
    assert "detection loop/perfect AVHS: rnd 1.000 (chance 0.5; coin flips" in console


def test_scorers_beside_simulation_and_in_pages_and_export(finished):
    """One table sets each scorer's requests and tokens per explanation beside simulation's; the neuron pages and
    the export show the scorers' values with their floors."""
    rows = {(r["neuron_set"], r["method"]): r for r in _csv(finished / "results" / "table_scorers.csv")}
    sim, detection = rows[("rnd", "simulation")], rows[("rnd", "detection")]
    assert float(sim["requests_per_explanation"]) == 10 and float(detection["requests_per_explanation"]) == 1
    assert int(sim["explanations_scored"]) == int(detection["explanations_scored"]) == 15  # 3 neurons x 5 formats
    assert 0 < float(detection["tokens_per_explanation"]) < float(sim["tokens_per_explanation"])
    assert detection["spearman_rho"] == "nan" and detection["n_explanations"] == "15"  # a constant 1.0: undefined
    page = next((finished / "results" / "report" / "rnd").glob("*.html")).read_text()
    assert "detection[perfect]" in page and "fuzzing_chance_high[perfect]" in page
    export = pq.read_table(finished / "results" / "export" / "rnd.parquet").to_pylist()
    assert {"detection[perfect]", "detection_chance_low[perfect]", "detection_unparseable[perfect]"} <= set(export[0])


def test_a_new_scorer_runs_only_its_jobs_and_a_coin_stays_within_its_floors(finished, tmp_path):
    """Adding a scorer schedules only its classify jobs and the tables; a coin-flipping scorer's balanced accuracy
    stays within the chance interval of its example mixes, and it correlates with simulation at a finite rho."""
    work = _copy(finished, tmp_path)

    def add_coin(config):
        config["scorers"]["coin"] = {**config["scorers"]["perfect"], "model": "loop-coin", "kinds": ["detection"]}

    _edit_config(work, add_coin)
    plan = _dry_run_jobs(work, "results/table6.csv")
    assert plan["classify"] == 5  # 5 formats of its one set, detection only
    assert set(plan) <= {"classify", "table_classify", "scorer_comparison", "cost_estimate", "table6", "all"}, plan
    proc = snakemake(work, "--cores", "2", "results/table6.csv")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = work / "results" / "smol" / "pydocs" / "detection"
    scores = [r for p in sorted(run.glob("*/loop/coin/*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(scores) == 15 and all(r["n_unparseable"] == 0 for r in scores)
    inside = [r["balanced_accuracy_random_low"] <= r["balanced_accuracy"] <= r["balanced_accuracy_random_high"]
              for r in scores]
    assert sum(inside) >= 0.8 * len(inside), inside  # each neuron's central 95% interval
    cells = [(float(r["rnd_mean"]), float(r["rnd_floor_random_low"]), float(r["rnd_floor_random_high"]))
             for r in _csv(work / "results" / "table_detection.csv") if r["scorer"] == "coin"]
    assert len(cells) == 5 and sum(low <= m <= high for m, low, high in cells) >= 4, cells
    assert any(float(r["detection[loop/coin/rnd]"]) != 3.0 for r in _csv(work / "results" / "table6.csv"))
    coin = next(r for r in _csv(work / "results" / "table_scorers.csv") if r["scorer"] == "coin" and r["neuron_set"] == "rnd")
    assert math.isfinite(float(coin["spearman_rho"])) and -1 <= float(coin["spearman_rho"]) <= 1


def test_n2g_rows_graphs_and_metrics(finished):
    import csv
    import shutil

    table2 = list(csv.DictReader(open(finished / "results" / "table2.csv")))
    assert {"N2G", "TokenLookup"} <= {r["format"] for r in table2}
    table6 = {r["format"] for r in csv.DictReader(open(finished / "results" / "table6.csv"))}
    assert not {"N2G", "TokenLookup"} & table6
    comparison = {r["method"] for r in csv.DictReader(open(finished / "results" / "table6_comparison.csv"))}
    assert comparison == {"N2G", "TokenLookup"}
    metrics = list(csv.DictReader(open(finished / "results" / "table_n2g.csv")))
    assert {(r["neuron_set"], r["method"]) for r in metrics} >= {("rnd", "N2G"), ("top", "TokenLookup")}
    graphs = finished / "results" / "smol" / "pydocs" / "n2g" / "rnd" / "graphs"
    dots = sorted(graphs.glob("*.dot"))
    assert len(dots) == 3 and all(p.read_text().startswith("digraph") for p in dots)
    assert all(p.with_suffix(".txt").read_text().strip() for p in dots)
    if shutil.which("dot"):  # make setup installs Graphviz; a machine without it still gets DOT and text
        assert all(p.with_suffix(".svg").read_text().lstrip().startswith(("<?xml", "<svg")) for p in dots)
    scores = pq.read_table(finished / "results" / "smol" / "pydocs" / "n2g" / "rnd" / "N2G.parquet").to_pylist()
    assert len(scores) == 3 and all(r["format"] == "N2G" for r in scores)


def test_adacs_and_puzzles(finished, server):
    import csv

    import numpy as np

    from loopback_server import unit_vector

    run = finished / "results" / "smol" / "pydocs"
    sims = pq.read_table(run / "similarity" / "rnd" / "loop" / "Summary.parquet").to_pylist()
    assert len(sims) == 3
    for row in sims:  # recompute the cosine from the loopback server's deterministic embeddings
        a, b = np.array(unit_vector(row["explanation"], 16)), np.array(unit_vector(row["reference"], 16))
        assert row["similarity"] == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-9)
    table3 = list(csv.DictReader(open(finished / "results" / "table3.csv")))
    assert {r["format"] for r in table3} == {"Original", "Summary", "Highlight", "HighlightSummary", "AVHS"}
    assert all(r["explainer"] == "loop" for r in table3)  # the reference explainer is never compared
    table4 = list(csv.DictReader(open(finished / "results" / "table4.csv")))
    sets = {r["puzzle_set"] for r in table4}
    assert "gen" in sets
    gen = json.loads((finished / "results" / "puzzles" / "gen" / "puzzles.json").read_text())
    expl = [json.loads(x) for x in
            (finished / "results" / "puzzles" / "gen" / "explanations" / "loop" / "AVHS.jsonl").read_text().splitlines()]
    assert len(expl) == 2 * len(gen) and {e["puzzle"] for e in expl} == set(gen)
    assert {e["ground_truth"] for e in expl} == {p["explanation"] for p in gen.values()}
    if "official" in sets:
        prompts = [json.loads(x) for x in (finished / "results" / "puzzles" / "official" / "prompts" / "loop" /
                                           "Summary.jsonl").read_text().splitlines()]
        assert [p["puzzle"] for p in prompts] == ["colors", "of", "million"]
        assert all(p["cutoff"] == 1.0 for p in prompts)


def test_every_written_column_is_documented(reported):
    """Every CSV column, Parquet column, explanation key and usage key the run wrote (the export included) is in a
    table of docs/ (docs/data_contracts.md, docs/tables.md), placeholders such as `{set}_mean` standing for names."""
    assert (reported / "results" / "export" / "rnd.parquet").exists()
    assert undocumented_columns(reported / "results", ROOT / "docs") == {}


# --- the report: neuron pages, index, plots, export --------------------------------------------------------------


@pytest.fixture(scope="module")
def reported(finished):
    return finished  # rule all (the main command) builds the report and the export with the tables


def _neurons(work, neuron_set) -> list[tuple[int, int]]:
    import csv

    path = work / "results" / "smol" / "pydocs" / "neuron_sets" / f"{neuron_set}.csv"
    return [(int(r["layer"]), int(r["neuron"])) for r in csv.DictReader(open(path))]


def _page_text(path) -> str:
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts, self.skip = [], False

        def handle_starttag(self, tag, attrs):
            self.skip = tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip = False

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return "".join(parser.parts)


def _by_neuron(path, key="format") -> dict:
    return {(r["layer"], r["neuron"], r[key]): r for r in pq.read_table(path).to_pylist()}


def test_report_pages_and_export_show_the_runs_explanations_and_scores(reported):
    run = reported / "results" / "smol" / "pydocs"
    site = reported / "results" / "report"
    console = (reported / "console.txt").read_text()
    assert "neuron_pages: 5 neuron pages; open results/report/index.html" in console
    index = (site / "index.html").read_text()
    for neuron_set in ("rnd", "top"):
        expected = {f"layer{layer:03d}_neuron{neuron:05d}.html" for layer, neuron in _neurons(reported, neuron_set)}
        assert {p.name for p in (site / neuron_set).glob("*.html")} == expected
        assert all(f'href="{neuron_set}/{name}"' in index for name in expected)
    assert sorted(p.name for p in (site / "plots").iterdir()) == sorted(
        f"{name}.svg" for name in ("scores_by_format", "paired_differences", "scores_by_layer", "prompt_tokens"))

    formats = ["AVHS", "Highlight", "HighlightSummary", "Original", "Summary"]
    explanations = {f: {(e["layer"], e["neuron"]): e for e in map(json.loads, (
        run / "explanations" / "rnd" / "loop" / f"{f}.jsonl").read_text().splitlines())} for f in formats}
    scores = {f: _by_neuron(run / "scores" / "rnd" / "loop" / "loop" / f"{f}.parquet") for f in formats}
    similarity = {f: _by_neuron(run / "similarity" / "rnd" / "loop" / f"{f}.parquet") for f in formats}
    layer, neuron = _neurons(reported, "rnd")[0]
    text = _page_text(site / "rnd" / f"layer{layer:03d}_neuron{neuron:05d}.html")
    for f in formats:
        assert explanations[f][(layer, neuron)]["explanation"] in text
        score = scores[f][(layer, neuron, f)]["score"]
        assert (f"{score:.3f}" if math.isfinite(score) else "—") in text

    export = pq.read_table(reported / "results" / "export" / "rnd.parquet").to_pylist()
    neurons = _neurons(reported, "rnd")
    assert len(export) == len(neurons) * (len(formats) + 2)  # every format, N2G and TokenLookup per neuron
    for row in export:
        key = (row["layer"], row["neuron"])
        if row["kind"] == "comparison":
            method = _by_neuron(run / "n2g" / "rnd" / f"{row['format']}.parquet")[(*key, row["format"])]
            assert row["explanation"] == method["explanation"]
            assert row["method_score"] == pytest.approx(method["score"], nan_ok=True)
            continue
        f = row["format"]
        assert row["explanation"] == explanations[f][key]["explanation"]
        assert row["simulation[loop]"] == pytest.approx(scores[f][(*key, f)]["score"], nan_ok=True)
        assert row["simulation_top[loop]"] == pytest.approx(scores[f][(*key, f)]["score_top"], nan_ok=True)
        assert row["adacs"] == pytest.approx(similarity[f][(*key, f)]["similarity"], nan_ok=True)
        assert row["explainer_model"] == "loop-model" and row["prompt_tokens"] > 100
    assert {(r["layer"], r["neuron"]) for r in export} == set(neurons)
    top = pq.read_table(reported / "results" / "export" / "top.parquet").to_pylist()
    assert len(top) == 2 * (len(formats) + 2) and all(r.get("adacs") is None for r in top)  # no reference there


def test_snakemake_report_zip_holds_tables_plots_and_pages(reported, tmp_path):
    import zipfile

    out = tmp_path / "report.zip"
    proc = snakemake(reported, "--report", str(out), "results/table6.csv", "results/report", "export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = zipfile.ZipFile(out).namelist()
    for wanted in ("table1.csv", "table2.csv", "table6.csv", "table_n2g.csv", "scores_by_format.svg",
                   "paired_differences.svg", "index.html"):
        assert any(n.endswith("/" + wanted) for n in names), wanted
    assert sum(n.endswith(".html") and "/rnd/layer" in n for n in names) == 3
    html = zipfile.ZipFile(out).read("report/report.html").decode()
    assert "Tables" in html and "Plots" in html and "Neurons" in html  # the categories


def test_report_in_chromium(reported, browser, tmp_path):
    """A reader opens the index from disk, filters and sorts the neuron list, follows a link to a neuron, switches
    the simulation shown and moves to the next neuron. A screenshot is kept when a check fails."""
    import os

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = reported / "results" / "report"
    run = reported / "results" / "smol" / "pydocs"
    shot = Path(os.environ.get("REPORT_SCREENSHOT_DIR", tmp_path)) / "report-failure.png"
    driver = browser
    try:
        driver.get((site / "index.html").as_uri())
        assert driver.find_element(By.ID, "filter-count").text == "5 of 5 neurons shown"  # the script ran
        assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                   for img in driver.find_elements(By.CSS_SELECTOR, "figure img"))  # the plots load from disk
        driver.find_element(By.ID, "filter-layer-min").send_keys("29")
        visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#neuron-list tbody tr") if r.is_displayed()]
        assert visible and all(r.get_attribute("data-layer") == "29" for r in visible)
        driver.find_element(By.ID, "filter-layer-min").clear()
        layer_header = driver.find_elements(By.CSS_SELECTOR, "#neuron-list thead th")[1]
        layer_header.find_element(By.TAG_NAME, "button").click()
        layer_header.find_element(By.TAG_NAME, "button").click()  # twice: descending
        layers = [int(r.get_attribute("data-layer")) for r in driver.find_elements(By.CSS_SELECTOR, "#neuron-list tbody tr")]
        assert layers == sorted(layers, reverse=True) and layer_header.get_attribute("aria-sort") == "descending"

        layer, neuron = _neurons(reported, "rnd")[0]
        driver.find_element(By.CSS_SELECTOR, f'a[href="rnd/layer{layer:03d}_neuron{neuron:05d}.html"]').click()
        assert driver.find_element(By.TAG_NAME, "h1").text == f"Layer {layer}, neuron {neuron}"
        rows = driver.find_elements(By.CSS_SELECTOR, "#explanations tbody tr")
        assert len(rows) == 5
        scores = _by_neuron(run / "scores" / "rnd" / "loop" / "loop" / "Original.parquet")[(layer, neuron, "Original")]
        original = next(r for r in rows if r.find_elements(By.TAG_NAME, "td")[1].text == "Original")
        cells = [td.text for td in original.find_elements(By.TAG_NAME, "td")]
        assert cells[3] == scores["explanation"]  # the explanation as written, not as markup
        assert cells[4] == (f"{scores['score']:.3f}" if math.isfinite(scores["score"]) else "—")
        shaded = driver.find_elements(By.CSS_SELECTOR, ".true .t[class*=' a']")
        assert shaded and shaded[0].get_attribute("title").startswith("activation ")
        strong = driver.find_elements(By.CSS_SELECTOR, ".true .t.hi")
        assert strong and strong[0].value_of_css_property("font-weight") in ("700", "bold")

        picker = Select(driver.find_element(By.ID, "sim-picker"))
        shown = lambda: {e.get_attribute("data-sim") for e in driver.find_elements(By.CSS_SELECTOR, ".sim")  # noqa: E731
                         if e.is_displayed()}
        assert len(shown()) == 1 and len(driver.find_elements(By.CSS_SELECTOR, ".sim:not([hidden])")) == 10
        picker.select_by_value("loop/loop/Summary/0")
        assert shown() == {"loop/loop/Summary/0"}
        values = driver.find_elements(By.CSS_SELECTOR, ".true .v.lo")
        assert values and not values[0].is_displayed()
        driver.find_element(By.ID, "allvalues").click()  # every value on demand, without colour
        assert values[0].is_displayed()

        second = _neurons(reported, "rnd")[1]
        driver.find_element(By.ID, "next").click()
        assert driver.find_element(By.TAG_NAME, "h1").text == f"Layer {second[0]}, neuron {second[1]}"
        assert driver.find_element(By.ID, "prev").get_attribute("href").endswith(
            f"layer{layer:03d}_neuron{neuron:05d}.html")
    except BaseException:
        driver.save_screenshot(str(shot))
        print(f"screenshot of the failing page: {shot}")
        raise


def test_lint_and_slurm_dry_run(finished):
    lint = snakemake(finished, "--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dry = snakemake(finished, "--executor", "slurm", "-n", "-j", "10", "--forceall")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "extract_shard" in dry.stdout + dry.stderr


def _fails(tmp_path, config, embedded_model_dir=None, expect=""):
    work = make_workdir(tmp_path, config, embedded_model_dir)
    proc = snakemake(work, "--cores", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expect in out, out[-3000:]
    return work


def test_malformed_config(tmp_path):
    config = tiny_config()
    config["extraction"]["top_k"] = -1
    config["subject"]["layers"] = "some"
    work = _fails(tmp_path, config, expect="invalid configuration (2 problems")
    assert not (work / "results").exists()


def test_unknown_model(tmp_path):
    config = tiny_config(subject={"id": "ghost", "model": "no-such-org/no-such-model"})
    work = _fails(tmp_path, config, expect="cannot load subject model 'no-such-org/no-such-model'")
    assert not (work / "data" / "models" / "ghost").exists()


def test_layer_out_of_range(tmp_path, embedded_model_dir):
    config = tiny_config()
    config["subject"]["layers"] = [0, 30]
    work = _fails(tmp_path, config, embedded_model_dir, expect="subject.layers [30] out of range")
    assert not (work / "results" / "smol" / "pydocs" / "activations").exists()


def test_missing_hook_point(tmp_path, embedded_model_dir):
    config = tiny_config()
    config["subject"]["hook"] = "blocks.{layer}.mlp.hook_missing"
    work = _fails(tmp_path, config, embedded_model_dir, expect="hook point 'blocks.0.mlp.hook_missing'")
    assert not (work / "results" / "smol" / "pydocs" / "activations").exists()


def test_empty_corpus(tmp_path, embedded_model_dir):
    (tmp_path / "empty.txt").write_text("\n")
    config = tiny_config(corpus={"id": "empty", "source": "text_files", "files": [{"path": str(tmp_path / "empty.txt")}]})
    work = _fails(tmp_path, config, embedded_model_dir, expect="is empty")
    assert not (work / "results" / "smol" / "corpus" / "empty.parquet").exists()


def test_corpus_smaller_than_k(tmp_path, embedded_model_dir):
    config = tiny_config()
    config["corpus"]["n_excerpts"] = 10
    work = _fails(tmp_path, config, embedded_model_dir, expect="fewer than extraction.top_k=20")
    assert not (work / "results" / "smol" / "pydocs" / "activations").exists()


def _dry_run_jobs(work, *args, without=()) -> dict[str, int]:
    """{rule: count} from a dry run's job-stats table."""
    proc = snakemake(work, "--cores", "2", "-n", *args, without=without)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    jobs = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


def test_new_prompt_variant_schedules_only_its_jobs(finished, tmp_path):
    import yaml

    work = tmp_path / "copy"
    copy_run(finished, work)
    config_path = work / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["prompt_formats"]["Summary-3ex"] = {"base": "Summary", "max_excerpts": 3}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = _dry_run_jobs(work)
    n_sets = len(config["neuron_sets"])
    n_compared = sum(1 for e in config["explainers"].values() if e.get("role", "compared") == "compared")
    n_puzzle_sets = len(config["puzzles"]["sets"])
    assert jobs.pop("render_prompts") == n_sets * n_compared
    assert jobs.pop("explain") == n_sets * n_compared
    assert jobs.pop("simulate_score") == n_sets * n_compared * len(config["simulators"])
    assert jobs.pop("adacs_similarity") == len(config["adacs"]["references"]) * n_compared
    kinds = sum(len(s.get("kinds", ["detection", "fuzzing"])) * len(s.get("neuron_sets") or config["neuron_sets"])
                for s in config["scorers"].values())
    assert jobs.pop("classify") == n_compared * kinds
    for rule in ("render_puzzle_prompts", "explain_puzzles", "puzzle_similarity"):
        assert jobs.pop(rule) == n_puzzle_sets * n_compared, rule
    assert jobs.pop("all") == 1
    assert jobs.pop("cost_estimate") == 1
    # only the aggregations follow: the tables, the report's plots and pages, the export
    assert set(jobs) == {"table1", "table2", "table3", "table4", "table_classify", "scorer_comparison", "table6",
                         "report_plots", "neuron_pages", "export"}, jobs


def test_chunked_run_gathers_the_same_tables_and_grows_by_chunk(finished, tmp_path):
    """chunks: layer runs records/prompts/explain/simulate per layer of each set; the gathered per-set files give
    a byte-identical Table 2. Adding a neuron to a csv set then plans only that neuron's chunk."""
    work = tmp_path / "copy"
    copy_run(finished, work)
    _edit_config(work, lambda c: c.update(chunks="layer"))
    # Table 2 (the simulation scores): the tables that chunking can change; the others read the gathered files too
    proc = snakemake(work, "--cores", "2", "results/table2.csv")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (work / "results" / "table2.csv").read_bytes() == (finished / "results" / "table2.csv").read_bytes()
    run = work / "results" / "smol" / "pydocs"
    assert sorted(p.name for p in (run / "explanations" / "top" / "loop" / "AVHS").glob("*.jsonl")) == [
        "L000.failures.jsonl", "L000.jsonl", "L029.failures.jsonl", "L029.jsonl"]  # top: one neuron per layer
    assert sorted(p.name for p in (run / "records" / "top").iterdir()) == ["L000.parquet", "L029.parquet"]

    (work / "pick.csv").write_text("layer,neuron\n0,5\n29,7\n")
    _edit_config(work, lambda c: c["neuron_sets"].update(pick={"kind": "csv", "path": "pick.csv"}))
    proc = snakemake(work, "--cores", "2", "results/table2.csv")
    assert proc.returncode == 0, proc.stderr[-4000:]
    (work / "pick.csv").write_text("layer,neuron\n0,5\n29,7\n29,8\n")  # one more neuron, in layer 29
    jobs = _dry_run_jobs(work, "results/table2.csv")
    n_formats = len(yaml.safe_load((work / "config" / "config.yaml").read_text())["prompt_formats"])
    assert jobs["records"] == 1 and jobs["explain"] == n_formats and jobs["simulate_score"] == n_formats, jobs
    detail = snakemake(work, "--cores", "2", "-n", "results/table2.csv")
    out = detail.stdout + detail.stderr
    assert "output: results/smol/pydocs/records/pick/L029.parquet" in out
    assert "output: results/smol/pydocs/records/pick/L000.parquet" not in out  # only read, by the gather job


def test_unknown_format_is_rejected_at_start(tmp_path):
    config = tiny_config()
    config["prompt_formats"] = {"Original": {}, "Sumary": {}}
    work = _fails(tmp_path, config, expect="unknown format 'Sumary'; known formats: AVHS, Highlight")
    assert not (work / "results").exists()


def test_a_scorer_on_an_unknown_neuron_set_is_rejected_at_start(tmp_path):
    scorer = {"provider": "local", "model": "smollm2-135m-instruct", "neuron_sets": ["rndm"]}
    work = _fails(tmp_path, tiny_config(scorers={"sc": scorer}),
                  expect="scorers.sc.neuron_sets: 'rndm' is not a configured neuron set (rnd, top)")
    assert not (work / "results").exists()


def test_human_study_from_the_run_feeds_table5_and_table6(finished, tmp_path):
    import csv
    import yaml

    from autointerp.human_eval.store import assignment, connect, get_or_create_rater, init_rating_db, record_item

    work = tmp_path / "copy"
    copy_run(finished, work)
    template, study = "results/smol/pydocs/human_eval/rnd/loop.template.sqlite", "human_eval/rnd-loop.sqlite"
    proc = snakemake(work, "--cores", "2", template)
    assert proc.returncode == 0, proc.stderr[-3000:]
    init_rating_db(work / template, work / study)  # ratings live outside results/ (docs/human_eval.md)
    conn = connect(work / study)
    rater = get_or_create_rater(conn, "Ada")
    pages = assignment(conn, rater["id"])
    assert len(pages) == 3 and all(len(p["order"]) == 5 for p in pages)
    for page in pages:  # rate the first-shown explanation 5 and best, the others 2
        first = page["order"][0]
        record_item(conn, rater["id"], page["item_id"], {e: (5 if e == first else 2) for e in page["order"]}, first)
    conn.close()
    config_path = work / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["human_eval"] = {"ratings": [study]}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(work, "--cores", "2", "results/table6.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table5 = list(csv.DictReader(open(work / "results" / "table5.csv")))
    assert sum(float(r["pct_best"]) for r in table5) == pytest.approx(100, abs=1e-3)  # CSV keeps 6 digits
    assert sum(int(r["n_ratings"]) for r in table5) == 3 * 5
    assert sum(float(r["mean"]) * int(r["n_ratings"]) for r in table5) == pytest.approx(3 * (5 + 4 * 2))
    header = next(csv.reader(open(work / "results" / "table6.csv")))
    assert "human_rating[loop]" in header and "human_best[loop]" in header


def _copy(finished, tmp_path):
    work = tmp_path / "copy"
    copy_run(finished, work)
    return work


def _edit_config(work, edit, path="config/config.yaml"):
    import yaml

    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    edit(config)
    (work / path).write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def _digests(folder) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("table*.csv"))}


def test_priced_roles_only_presets_reuse_shared_work_and_match_their_estimates(finished, server, tmp_path):
    """A config that changes only the LLM roles (other model names, prices, a second simulator in the other mode;
    two of the five formats, to keep the test short) is a run of its own: no model, corpus or extraction job, tables
    under results/<run>/, the default tables untouched; and the cost estimate printed before the first paid call is
    within 10 % of the ledger's actual cost, per stage and for each simulator mode."""
    import csv

    work = _copy(finished, tmp_path)
    before = _digests(work / "results")
    run = "priced"

    def roles_only(config):
        config["simulators"]["loopchat"] = {**config["simulators"]["loop"], "mode": "chat_logprobs"}
        for role in (*config["explainers"].values(), *config["simulators"].values(),
                     *config["embedders"].values(), *config["scorers"].values()):
            role.update(model=f"{role['model']}-{run}", **PRICES)
        config["prompt_formats"] = {"Original": {}, "Summary": {}}  # Original: the AdaCS reference's format

    _edit_config(work, roles_only, f"config/{run}.yaml")
    target = (f"results/{run}/table6.csv", "--configfile", f"config/{run}.yaml")
    plan = _dry_run_jobs(work, *target)
    assert plan and not {"prepare_model", "build_corpus", "extract_shard", "merge_activations"} & set(plan), plan
    proc = snakemake(work, "--cores", "2", *target)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rule extract_shard" not in out and "rule build_corpus" not in out
    assert f"cost estimate (results/{run}/cost_estimate.csv): $" in out  # on the console, before paid jobs
    assert out.index("rule cost_estimate") < out.index("rule explain")
    results = work / "results" / run
    assert {"table1.csv", "table2.csv", "table6.csv", "cost_estimate.csv"} <= {p.name for p in results.glob("*.csv")}
    for simulator in ("loop", "loopchat"):
        scores = pq.read_table(results / "smol" / "pydocs" / "scores" / "rnd" / "loop" / simulator / "Summary.parquet")
        assert scores.num_rows == 3 and all(math.isfinite(x) for x in scores.column("score").to_pylist())
    assert (work / "logs" / run / "smol" / "pydocs" / "simulate" / "rnd" / "loop" / "loop" / "Summary.log").exists()
    _check_estimate(_estimate(results / "cost_estimate.csv"), _ledger_cost(results))
    # Each simulator mode on its own: the estimate per simulator role against its jobs' ledgers.
    estimated = {}
    for row in csv.DictReader(open(results / "cost_estimate.csv")):
        if row["stage"] == "simulate_score":
            estimated[row["role"]] = estimated.get(row["role"], 0.0) + float(row["usd"])
    for simulator, estimate in estimated.items():
        usage = [p for p in (results / "smol" / "pydocs" / "usage" / "simulate").rglob("*.json")
                 if p.parent.name == simulator]
        actual = sum(json.loads(p.read_text())["totals"]["cost_usd"] for p in usage)
        assert usage and abs(actual - estimate) <= 0.10 * estimate, (simulator, estimate, actual)
    assert set(estimated) == {"loop", "loopchat"}
    assert _digests(work / "results") == before  # the default run's tables, byte for byte
    # The default run's table path under another config says where that run's table is.
    wrong = snakemake(work, "-n", "results/table6.csv", "--configfile", f"config/{run}.yaml")
    assert wrong.returncode != 0 and f"ask for results/{run}/table6.csv" in wrong.stdout + wrong.stderr


def test_the_budget_stops_the_run_before_any_paid_call(finished, server, tmp_path):
    work = _copy(finished, tmp_path)

    def over_budget(config):
        config["explainers"]["loop"].update(model="loop-model-3", **PRICES)  # uncached: explain would have to pay
        config["llm"]["max_cost_usd"] = 0.0001

    _edit_config(work, over_budget)
    before = server.count()
    proc = snakemake(work, "--cores", "2", "results/table6.csv")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "exceeds llm.max_cost_usd = $0.00" in out and "(explain $" in out, out[-3000:]
    assert server.count() == before  # not one paid request


def test_keys_are_needed_only_by_runs_that_call_an_endpoint(finished, server, tmp_path):
    work = _copy(finished, tmp_path)
    assert _dry_run_jobs(work, "--forcerun", "explain", without=("AUTOINTERP_TEST_KEY",))["explain"] > 0
    before = server.count()
    proc = snakemake(work, "--cores", "2", "--forcerun", "explain", "results/table6.csv", without=("AUTOINTERP_TEST_KEY",))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "the environment lacks $AUTOINTERP_TEST_KEY (for " in out, out[-3000:]
    assert "explainers.loop," in out and "simulators.loop" in out  # the roles of the jobs that would run
    assert "Finished jobid" not in out and server.count() == before  # reported before any job started
    # A run that calls no endpoint needs no key.
    ok = snakemake(work, "--cores", "2", "--forcerun", "table1", "results/table1.csv", without=("AUTOINTERP_TEST_KEY",))
    assert ok.returncode == 0, ok.stderr[-3000:]


def test_a_dead_endpoint_fails_with_one_clear_line(finished, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = _copy(finished, tmp_path)
    _edit_config(work, lambda c: c["explainers"]["loop"].update(base_url=f"http://127.0.0.1:{port}/v1",
                                                                 model="loop-model-4"))
    target = "results/smol/pydocs/explanations/rnd/loop/Original.jsonl"
    proc = snakemake(work, "--cores", "2", target)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"endpoint not reachable at http://127.0.0.1:{port}/v1" in out, out[-3000:]
    log = (work / "logs" / "smol" / "pydocs" / "explain" / "rnd" / "loop" / "Original.log").read_text()
    assert f"not reachable at http://127.0.0.1:{port}/v1" in log  # kept where the user can read it
    assert "Traceback" not in out
