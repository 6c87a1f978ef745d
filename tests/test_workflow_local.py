"""The default path: explainer, simulator and embedder on the embedded engine (provider: local), as in
config/config.yaml, on a tiny config. Two runs (the second after deleting every result but the corpus and the
activations, and the response cache) must give byte-identical records, prompts, explanations, scores and tables:
seeds reach the engine, and no measurement enters a result. (That a fresh extraction writes the same bytes is
tests/test_workflow.py::test_sharded_extraction_equals_one_pass_byte_for_byte.)"""

from __future__ import annotations

import hashlib
import shutil

import pytest

from workflow_utils import make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow


def _digests(work) -> dict[str, str]:
    """Every result file but the usage files (per-call latencies and cache hits live there by design)."""
    out = {}
    for path in sorted((work / "results").rglob("*")):
        rel = path.relative_to(work)
        if path.is_file() and "usage" not in rel.parts:
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, embedded_model_dir):
    local = {"provider": "local", "model": "smollm2-135m-instruct", "context_length": 8192}
    config = tiny_config(
        neuron_sets={"rnd": {"kind": "random", "total": 2, "seed": 1}},
        prompt_formats={"Original": {}, "Highlight": {}},
        explainers={"smollm2": {**local, "temperature": 1.0, "seed": 3}},
        simulators={"smollm2": local},
        embedders={"minilm": {"provider": "local", "model": "all-minilm-l6-v2"}},
        adacs={"embedder": "minilm", "references": {"rnd": {"kind": "top_tokens"}}},
    )
    work = make_workdir(tmp_path_factory.mktemp("local"), config, embedded_model_dir)
    digests = []
    for _ in range(2):
        proc = snakemake(work, "--cores", "2", "results/table6.csv", timeout=1500)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
        digests.append(_digests(work))
        for path in (work / "results").rglob("*"):
            if path.is_file() and not {"corpus", "activations"} & set(path.relative_to(work / "results").parts):
                path.unlink()
        shutil.rmtree(work / ".cache")
        shutil.rmtree(work / ".snakemake", ignore_errors=True)
    return digests


def test_two_fresh_runs_are_byte_identical(two_runs):
    first, second = two_runs
    assert any("/explanations/" in p for p in first) and "results/table6.csv" in first
    assert first.keys() == second.keys()
    assert [p for p in first if first[p] != second[p]] == []
    recomputed = [p for p in first if "/corpus/" not in p and "/activations/" not in p]
    assert any("/records/" in p for p in recomputed) and any("/scores/" in p for p in recomputed)


def test_the_local_run_explained_simulated_and_ranked(two_runs):
    first, _ = two_runs
    for part in ("/explanations/rnd/smollm2/Original.jsonl", "/scores/rnd/smollm2/smollm2/Highlight.parquet",
                 "/similarity/rnd/smollm2/Highlight.parquet"):
        assert any(p.endswith(part) for p in first), part
    assert {"results/table2.csv", "results/table3.csv", "results/table6.csv"} <= set(first)
