"""Reference explanations: seed-style CSVs, the NeuronViewer file parser and cache (never the network), and another
explainer's explanations from the same run."""

from __future__ import annotations

import json
import math
import urllib.error

import pytest

from autointerp.similarity import references as baselines
from autointerp.similarity.references import (
    Baseline,
    NeuronViewerUnavailable,
    as_texts,
    fetch_neuronviewer,
    load_csv_baselines,
    load_reference_explainer,
    neuronviewer_url,
    parse_neuronviewer,
)

# The first rows of SEED's inputs/test_neurons.csv, byte for byte (leading spaces, a quoted comma).
SEED_CSV = """layer,neuron,score,explanation
0,286,0.663509473, words related to comparison.
20,193,0.455764167,verbs indicating questioning or challenging behavior.
40,431,0.365750284," numbers related to time, dates, and measurements."
"""


def test_csv_seed_style_keeps_text_exactly(tmp_path):
    p = tmp_path / "test_neurons.csv"
    p.write_text(SEED_CSV, encoding="utf-8")
    got = load_csv_baselines(p)
    assert list(got) == [(0, 286), (20, 193), (40, 431)]
    assert got[(0, 286)] == Baseline(0, 286, " words related to comparison.", 0.663509473, "csv:test_neurons.csv")
    assert got[(20, 193)].explanation == "verbs indicating questioning or challenging behavior."
    assert got[(40, 431)].explanation == " numbers related to time, dates, and measurements."
    assert as_texts(got)[(40, 431)] == got[(40, 431)].explanation


def test_csv_header_case_index_column_and_no_score(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text(",Layer,Neuron,Explanation\n0,3,7, Some thing.\n1,3,8,other\n", encoding="utf-8")
    got = load_csv_baselines(p)
    assert got[(3, 7)].explanation == " Some thing." and got[(3, 7)].score is None and len(got) == 2
    p2 = tmp_path / "bom.csv"
    p2.write_text("\ufeffLAYER, neuron ,SCORE,explanation\n5,6,,x\n", encoding="utf-8")
    assert load_csv_baselines(p2)[(5, 6)] == Baseline(5, 6, "x", None, "csv:bom.csv")


def test_csv_other_column_and_errors(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text(",layer,neuron,explainer,NeuronViewer,Original\n0,0,286,gpt-3.5-turbo, words related to comparison.,"
                 "comparisons.\n", encoding="utf-8")
    assert load_csv_baselines(p, column="neuronviewer")[(0, 286)].explanation == " words related to comparison."
    with pytest.raises(ValueError, match="explanation"):
        load_csv_baselines(p)
    dup = tmp_path / "dup.csv"
    dup.write_text("layer,neuron,explanation\n1,2,a\n1,2,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="twice"):
        load_csv_baselines(dup)
    bad = tmp_path / "bad.csv"
    bad.write_text("layer,neuron,explanation\n1,x,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="integers"):
        load_csv_baselines(bad)


# ---------------------------------------------------------------- NeuronViewer (documented shape, no network)


def _nv_line(explanation: str, score) -> str:
    seq = {"simulation": {"tokens": ["a"], "expected_activations": [0.0], "activation_scale": "neuron_activations",
                          "distribution_values": [[0.0]], "distribution_probabilities": [[1.0]]},
           "true_activations": [0.0], "ev_correlation_score": 0.5}
    return json.dumps({
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 286},
        "scored_explanations": [{"dataclass_name": "ScoredExplanation", "explanation": explanation,
                                 "scored_simulation": {"dataclass_name": "ScoredSimulation",
                                                       "scored_sequence_simulations": [seq] * 10,
                                                       "ev_correlation_score": score}}]})


SAMPLE = _nv_line(" words related to comparison.", 0.663509473) + "\n"


def test_neuronviewer_url():
    assert neuronviewer_url(0, 286) == ("https://openaipublic.blob.core.windows.net/neuron-explainer/data/"
                                        "explanations/0/286.jsonl")


def test_parse_neuronviewer_sample():
    b = parse_neuronviewer(SAMPLE, 0, 286)
    assert b == Baseline(0, 286, " words related to comparison.", 0.663509473, "neuronviewer")
    assert parse_neuronviewer("\n" + _nv_line("x", None), 1, 2).score is None
    assert math.isnan(parse_neuronviewer(_nv_line("x", float("nan")), 1, 2).score)
    with pytest.raises(ValueError, match="NeuronSimulationResults"):
        parse_neuronviewer('{"scored_explanations": []}', 1, 2)
    with pytest.raises(ValueError, match="empty"):
        parse_neuronviewer("\n", 1, 2)


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test (and records the URL)."""
    calls = []

    def urlopen(req, timeout=None):
        calls.append(req.full_url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(baselines.urllib.request, "urlopen", urlopen)
    return calls


def test_fetch_uses_cache_without_network(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "286.jsonl").write_text(SAMPLE, encoding="utf-8")
    assert fetch_neuronviewer(0, 286, tmp_path).explanation == " words related to comparison."
    assert no_network == []


def test_fetch_offline_error_names_csv(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NeuronViewerUnavailable, match="CSV") as e:
        fetch_neuronviewer(3, 4, tmp_path)
    assert "HF_HUB_OFFLINE" in str(e.value) and no_network == []


def test_fetch_network_failure_error_names_csv(tmp_path, no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(NeuronViewerUnavailable, match="CSV"):
        fetch_neuronviewer(3, 4, tmp_path)
    assert no_network == [neuronviewer_url(3, 4)] and not (tmp_path / "3").exists()


def test_fetch_downloads_once_and_caches_raw_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return SAMPLE.encode()

    def urlopen(req, timeout=None):
        calls.append(req.full_url)
        return Resp()

    monkeypatch.setattr(baselines.urllib.request, "urlopen", urlopen)
    got = baselines.fetch_neuronviewer_many([(0, 286), (0, 286)], tmp_path)
    assert got[(0, 286)].score == 0.663509473 and calls == [neuronviewer_url(0, 286)]
    assert (tmp_path / "0" / "286.jsonl").read_text(encoding="utf-8") == SAMPLE


def test_fetch_404_says_no_such_neuron(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def urlopen(req, timeout=None):
        raise urllib.error.HTTPError(req.full_url, 404, "Not Found", {}, None)

    monkeypatch.setattr(baselines.urllib.request, "urlopen", urlopen)
    with pytest.raises(NeuronViewerUnavailable, match="404"):
        fetch_neuronviewer(48, 0, tmp_path)


# ---------------------------------------------------------------- reference explainer


def test_load_reference_explainer(tmp_path):
    rows = [
        {"layer": 0, "neuron": 1, "format": "Original", "sample": 0, "explanation": " colours.", "valid": True},
        {"layer": 0, "neuron": 1, "format": "Original", "sample": 1, "explanation": "other sample", "valid": True},
        {"layer": 0, "neuron": 1, "format": "Summary", "sample": 0, "explanation": "summary", "valid": True},
        {"layer": 0, "neuron": 2, "format": "Original", "sample": 0, "explanation": None, "valid": False,
         "raw_completion": "\n"},
        {"layer": 2, "neuron": 5, "format": "Original", "sample": 0, "explanation": "numbers", "valid": True},
    ]
    p = tmp_path / "explanations.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    assert load_reference_explainer(p) == {(0, 1): " colours.", (2, 5): "numbers"}
    assert load_reference_explainer(p, format="Summary") == {(0, 1): "summary"}
    assert load_reference_explainer([p], sample=1) == {(0, 1): "other sample"}
    assert load_reference_explainer(p, include_invalid=True)[(0, 2)] == "\n"
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps(dict(rows[0], explanation="different")) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="two different"):
        load_reference_explainer([p, clash])


def test_top_token_reference_and_degenerate_share():
    from autointerp.common.records import ActivationRecord, NeuronId
    from autointerp.similarity.references import degenerate_share, top_token_references

    def rec(peak_at, value):
        acts = [0.0, 0.0, 0.0]
        acts[peak_at] = value
        return ActivationRecord([" a", " of", "\n"], acts)

    records = {NeuronId(3, 1): {"train": [rec(1, 2.0), rec(1, 1.0), rec(0, 5.0)],
                                "valid": [rec(2, 9.0), rec(0, 0.5)], "valid_sources": ["top", "random"]}}
    # " of" peaks twice; " a" (5.0) and "\n" (9.0) once each: the tie goes to the higher activation; the random
    # valid record never counts; whitespace-only tokens are kept as they are
    assert top_token_references(records, 2) == {(3, 1): 'the tokens "of" and "\\n"'}
    assert top_token_references(records, 1) == {(3, 1): 'the token "of"'}
    assert degenerate_share({(0, i): "same" for i in range(4)}) == 1.0
    assert degenerate_share({(0, 0): "x", (0, 1): "y", (0, 2): "x", (0, 3): "z"}) == 0.5
