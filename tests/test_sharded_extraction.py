"""Sharded extraction: shard states saved, merged per layer, give the bytes of a single pass; the DDSketch
quantiles are the ddsketch library's and within its relative-error bound of the exact quantiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autointerp.extract.activations import (ExtractionError, ExtractionRun, ExtractionSettings, LayerState, extract,
                                            layer_chunks, shard_bounds, write_layer_shards)
from autointerp.extract.summaries import SKETCH_ZERO, MaximaSketch, PairwiseSums
from tiny_models import random_token_ids, tiny_subject

LEVELS = (0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0)


@pytest.fixture(scope="module")
def model():
    return tiny_subject(seed=0)


@pytest.fixture(scope="module")
def tokens():
    return random_token_ids(77, 12, seed=1)  # 77 excerpts: the last batch of 8 is partial


def settings_for(accuracy=None):
    return ExtractionSettings(layers=[0, 1], top_k=7, random_n=9, quantiles=(0.5, 0.9, 0.99, 0.999), seed=3,
                              batch_size=8, quantile_accuracy=accuracy)


def layer_files(tmp_path, model, tokens, settings, shards: int) -> dict[int, bytes]:
    """Extract ``shards`` shards, save each state, load and merge them in a shuffled order, write Parquet."""
    states: dict[int, list] = {0: [], 1: []}
    for i, (lo, hi) in enumerate(shard_bounds(len(tokens), settings.batch_size, shards)):
        run = extract(model, tokens[lo:hi], settings, excerpt_offset=lo, n_total=len(tokens))
        for layer, state in run.states.items():
            path = tmp_path / f"s{shards}-{i}-{layer}.npz"
            state.save(path)
            states[layer].append(path)
    out = {}
    for layer, paths in states.items():
        order = np.random.default_rng(layer).permutation(len(paths))  # merge order must not matter
        merged = LayerState.load(paths[order[0]])
        for j in order[1:]:
            merged.merge(LayerState.load(paths[j]))
        target = tmp_path / f"merged{shards}-{layer}.parquet"
        write_layer_shards(ExtractionRun({layer: merged}), settings, {layer: target}, {"model": "tiny"})
        out[layer] = target.read_bytes()
    return out


@pytest.mark.parametrize("accuracy", [None, 0.01])
def test_shards_merge_to_the_bytes_of_one_pass(tmp_path, model, tokens, accuracy):
    settings = settings_for(accuracy)
    single = layer_files(tmp_path, model, tokens, settings, 1)
    for shards in (2, 5):
        assert layer_files(tmp_path, model, tokens, settings, shards) == single
    # and one pass straight from extract() (no save/load) writes the same bytes too
    run = extract(model, tokens, settings)
    target = tmp_path / "direct.parquet"
    write_layer_shards(ExtractionRun({0: run.states[0]}), settings, {0: target}, {"model": "tiny"})
    assert target.read_bytes() == single[0]


def test_shard_bounds_cut_at_batch_boundaries():
    bounds = shard_bounds(77, 8, 4)
    assert bounds[0][0] == 0 and bounds[-1][1] == 77
    assert all(hi == lo2 for (_, hi), (lo2, _) in zip(bounds, bounds[1:]))
    assert all(lo % 8 == 0 for lo, _ in bounds)
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 8 + 3  # as even as batches allow
    with pytest.raises(ExtractionError, match=r"extraction.shards=11.*10 batches.*use 1\.\.10 shards"):
        shard_bounds(77, 8, 11)


def test_a_shard_must_start_at_a_batch_boundary(model, tokens):
    with pytest.raises(ExtractionError, match="not a multiple of the batch size 8"):
        extract(model, tokens[5:], settings_for(), excerpt_offset=5, n_total=len(tokens))


def test_layer_chunks_name_and_cover_the_layers():
    assert layer_chunks("all", None) == {"layers-all": "all"}
    assert layer_chunks([29, 0], None) == {"layers-all": [0, 29]}
    chunks = layer_chunks(list(range(10)), 4)
    assert chunks == {"layers000-003": [0, 1, 2, 3], "layers004-007": [4, 5, 6, 7], "layers008-009": [8, 9]}


def test_pairwise_sums_do_not_depend_on_order_or_split():
    rng = np.random.default_rng(0)
    blocks = rng.normal(size=(37, 5)) * 10.0 ** rng.integers(-8, 8, size=(37, 1))
    one = PairwiseSums()
    for b, v in enumerate(blocks):
        one.add(b, v)
    parts = [PairwiseSums() for _ in range(3)]
    for b in rng.permutation(37):
        parts[b % 3].add(int(b), blocks[b])
    merged = parts[2]
    merged.merge(parts[0])
    merged.merge(parts[1])
    assert merged.total().tobytes() == one.total().tobytes()
    assert np.allclose(one.total(), blocks.sum(axis=0), rtol=1e-12, atol=1e-6)
    restored = PairwiseSums.from_arrays(one.to_arrays("s"), "s")
    assert restored.total().tobytes() == one.total().tobytes()
    with pytest.raises(ValueError, match="added twice"):
        one.add(3, blocks[3])


def sample_maxima(n=4000, d=6, seed=0) -> np.ndarray:
    """Per-neuron distributions with negatives, exact zeros, tiny magnitudes and heavy tails."""
    rng = np.random.default_rng(seed)
    cols = [rng.lognormal(0, 1.5, n), rng.normal(0, 1, n), -rng.exponential(0.1, n),
            np.where(rng.random(n) < 0.3, 0.0, rng.gamma(2.0, 3.0, n)), rng.standard_t(2, n),
            rng.uniform(-1e-9, 1e-9, n)]
    return np.stack(cols[:d], axis=1).astype(np.float32)


@pytest.mark.parametrize("alpha", [0.01, 0.002])
def test_sketch_is_the_librarys_ddsketch_and_within_its_bound(alpha):
    from ddsketch import DDSketch

    values = sample_maxima()
    sketch = MaximaSketch(alpha, values.shape[1])
    for start in range(0, len(values), 64):
        sketch.update(torch.as_tensor(values[start:start + 64]))
    ours = sketch.quantiles(LEVELS)
    for neuron in range(values.shape[1]):
        col = values[:, neuron].astype(np.float64)
        ref = DDSketch(alpha)
        for v in col:
            ref.add(0.0 if abs(v) < SKETCH_ZERO else float(v))  # the one documented difference: |v| < 2^-20 is 0
        for qi, q in enumerate(LEVELS):
            assert ours[neuron, qi] == pytest.approx(ref.get_quantile_value(q), rel=1e-12, abs=0), (neuron, q)
            exact = np.quantile(col, q, method="lower")  # the order statistic DDSketch's rank rule targets
            if abs(exact) >= SKETCH_ZERO:
                assert abs(ours[neuron, qi] - exact) <= alpha * abs(exact) * (1 + 1e-9), (neuron, q)
            else:
                assert abs(ours[neuron, qi]) < SKETCH_ZERO * (1 + alpha)


def test_sketch_merges_exactly_and_round_trips():
    values = sample_maxima(seed=1)
    whole, parts = MaximaSketch(0.01, 6), [MaximaSketch(0.01, 6) for _ in range(3)]
    for start in range(0, len(values), 50):
        batch = torch.as_tensor(values[start:start + 50])
        whole.update(batch)
        parts[(start // 50) % 3].update(batch)
    merged = MaximaSketch.from_arrays(parts[1].to_arrays())
    merged.merge(parts[2])
    merged.merge(parts[0])
    assert merged.quantiles(LEVELS).tobytes() == whole.quantiles(LEVELS).tobytes()
    with pytest.raises(ValueError, match="relative accuracy"):
        whole.merge(MaximaSketch(0.02, 6))


def test_sketch_scratch_is_bounded_by_the_value_range_not_the_corpus():
    small, large = MaximaSketch(0.005, 64), MaximaSketch(0.005, 64)
    rng = np.random.default_rng(2)
    small.update(torch.as_tensor(rng.lognormal(0, 1, (100, 64)).clip(max=60).astype(np.float32)))
    for _ in range(50):
        large.update(torch.as_tensor(rng.lognormal(0, 1, (1000, 64)).clip(max=60).astype(np.float32)))
    size = {name: sum(a.nbytes for a in s.to_arrays().values()) for name, s in (("small", small), ("large", large))}
    assert size["large"] <= size["small"] * 1.2  # 500x the excerpts, about the same scratch
