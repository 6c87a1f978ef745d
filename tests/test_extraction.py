"""Streaming extraction equals a brute-force computation on a tiny random-weight transformer-lens model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from autointerp.extract.activations import ExtractionError, ExtractionSettings, extract, random_sample_ids
from tiny_models import brute_force_activations, random_token_ids, tiny_subject

HOOK = "blocks.{layer}.mlp.hook_post"
QUANTILES = (0.5, 0.9, 0.99, 0.999)


@pytest.fixture(scope="module")
def model():
    return tiny_subject(seed=0)


@pytest.fixture(scope="module")
def tokens():
    return random_token_ids(70, 12, seed=1)


def tables(model, tokens, **kw):
    settings = ExtractionSettings(layers=[0, 1], hook=HOOK, top_k=kw.pop("top_k", 7), random_n=kw.pop("random_n", 9),
                                  quantiles=QUANTILES, seed=3, batch_size=kw.pop("batch_size", 8))
    run = extract(model, tokens, settings, **kw)
    return {layer: state.to_table(layer, QUANTILES, {"model": "tiny"}) for layer, state in run.states.items()}


def test_matches_brute_force(model, tokens):
    got = tables(model, tokens)
    for layer in (0, 1):
        acts = brute_force_activations(model, tokens, HOOK, layer)  # (N, T, d)
        per_excerpt_max = acts.max(axis=1)  # (N, d)
        t = got[layer].to_pydict()
        for neuron in range(acts.shape[2]):
            col = per_excerpt_max[:, neuron]
            # total order: value descending, then excerpt id ascending
            order = sorted(range(len(col)), key=lambda i: (-col[i], i))[:7]
            assert t["top_excerpt_ids"][neuron] == order
            np.testing.assert_allclose(t["top_max_activations"][neuron], col[order], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.array(t["top_activations"][neuron]), acts[order, :, neuron],
                                       rtol=1e-5, atol=1e-6)
            rand = random_sample_ids(len(tokens), 9, 3)
            assert t["random_excerpt_ids"][neuron] == list(rand)
            np.testing.assert_allclose(np.array(t["random_activations"][neuron]), acts[rand, :, neuron],
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(t["quantiles"][neuron], np.quantile(col, QUANTILES), rtol=1e-5, atol=1e-6)
            flat = acts[:, :, neuron].astype(np.float64)
            assert t["mean"][neuron] == pytest.approx(flat.mean(), rel=1e-6, abs=1e-9)
            assert t["variance"][neuron] == pytest.approx(flat.var(), rel=1e-5, abs=1e-9)
            assert t["max_activation"][neuron] == pytest.approx(col.max(), rel=1e-6)
        assert set(t["n_tokens"]) == {tokens.size}


def test_deterministic_and_batch_size_invariant(model, tokens):
    a, b, c = tables(model, tokens), tables(model, tokens), tables(model, tokens, batch_size=5)
    for layer in (0, 1):
        assert a[layer].equals(b[layer])
        for name in ("top_excerpt_ids", "random_excerpt_ids"):
            assert a[layer].column(name).equals(c[layer].column(name))
        np.testing.assert_allclose(np.array(a[layer].column("top_activations").to_pylist()),
                                   np.array(c[layer].column("top_activations").to_pylist()), atol=1e-5)


def test_corpus_shards_merge_exactly(model, tokens):
    """Two corpus shards with global ids, merged, equal one pass over the whole corpus."""
    settings = ExtractionSettings(layers=[0, 1], hook=HOOK, top_k=7, random_n=9, quantiles=QUANTILES, seed=3,
                                  batch_size=8)
    whole = extract(model, tokens, settings)
    first = extract(model, tokens[:32], settings, excerpt_offset=0, n_total=len(tokens))
    second = extract(model, tokens[32:], settings, excerpt_offset=32, n_total=len(tokens))
    for layer in (0, 1):
        first.states[layer].merge(second.states[layer])
        merged = first.states[layer].to_table(layer, QUANTILES, {})
        single = whole.states[layer].to_table(layer, QUANTILES, {})
        for name in ("top_excerpt_ids", "random_excerpt_ids", "quantiles", "max_activation"):
            assert merged.column(name).equals(single.column(name)), name
        np.testing.assert_allclose(merged.column("mean").to_numpy(), single.column("mean").to_numpy(), rtol=1e-9)


def test_ties_break_by_smaller_excerpt_id(model):
    tokens = np.tile(random_token_ids(1, 12, seed=5), (10, 1))  # ten identical excerpts: all maxima tie
    got = tables(model, tokens, top_k=4, random_n=3)
    assert set(map(tuple, got[0].column("top_excerpt_ids").to_pylist())) == {(0, 1, 2, 3)}


def test_layer_out_of_range(model, tokens):
    settings = ExtractionSettings(layers=[0, 5], hook=HOOK, top_k=3, random_n=3)
    with pytest.raises(ExtractionError, match=r"layers \[5\] out of range.*0\.\.1"):
        extract(model, tokens, settings)


def test_missing_hook_point(model, tokens):
    from autointerp.extract.subject_models import SubjectModelError

    settings = ExtractionSettings(layers=[0], hook="blocks.{layer}.mlp.hook_nope", top_k=3, random_n=3)
    with pytest.raises(SubjectModelError, match=r"hook point 'blocks\.0\.mlp\.hook_nope'.*include: .*hook_post"):
        extract(model, tokens, settings)


def test_corpus_smaller_than_k(model, tokens):
    settings = ExtractionSettings(layers=[0], hook=HOOK, top_k=20, random_n=3)
    with pytest.raises(ExtractionError, match="fewer than extraction.top_k=20"):
        extract(model, tokens[:10], settings)


def test_random_sample_larger_than_corpus(model, tokens):
    settings = ExtractionSettings(layers=[0], hook=HOOK, top_k=3, random_n=50)
    with pytest.raises(ExtractionError, match="random_n=50 is larger than the corpus"):
        extract(model, tokens[:10], settings)


def test_shard_schema_is_documented(model, tokens):
    """Every column of a shard appears in docs/data_contracts.md with its Arrow type."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data_contracts.md").read_text()
    table = tables(model, tokens)[0]
    for field in table.schema:
        assert f"`{field.name}`" in doc, field.name
    assert isinstance(table.schema.field("top_activations").type, pa.FixedSizeListType)


def test_forward_stops_after_the_last_configured_hook(model, tokens):
    """Layers past the deepest configured one and the unembedding never run; the shallow layer's tables are
    the same as when it is extracted together with the last layer."""
    fired = []
    model.bridge.add_hook("blocks.1.hook_resid_pre", lambda t, hook=None: fired.append("block1"))
    model.bridge.add_hook("unembed.hook_out", lambda t, hook=None: fired.append("unembed"))
    try:
        settings = ExtractionSettings(layers=[0], hook=HOOK, top_k=7, random_n=9, quantiles=QUANTILES, seed=3,
                                      batch_size=8)
        shallow = extract(model, tokens, settings).states[0].to_table(0, QUANTILES, {"model": "tiny"})
        assert fired == []
        extract(model, tokens, ExtractionSettings(layers=[1], hook=HOOK, batch_size=8))
        assert "block1" in fired and "unembed" not in fired
    finally:
        model.bridge.reset_hooks(including_permanent=True)
    assert shallow.equals(tables(model, tokens)[0])


def test_extraction_logs_batches_tokens_per_second_and_eta(caplog):
    """Progress while it runs: every interval a line with batches done, tokens/s and an ETA; a last line at the end."""
    import logging

    model = tiny_subject()
    tokens = random_token_ids(24, 8)
    settings = ExtractionSettings(layers=[0, 1], batch_size=4, top_k=5, random_n=5)
    with caplog.at_level(logging.INFO, logger="autointerp.extract.progress"):
        extract(model, tokens, settings, label="shard 1/1", progress_interval_s=0.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "autointerp.extract.progress"]
    assert lines[0].startswith("shard 1/1: 1/6 batches, ") and " tokens/s, ETA " in lines[0]
    assert lines[-1].startswith("shard 1/1: 6/6 batches, ") and ", took " in lines[-1]
    assert len(lines) == 6 and "calls" not in " ".join(lines)
