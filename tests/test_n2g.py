"""N2G (autointerp.n2g): the trie on hand-built lines, pruning/saliency against brute force on a tiny
random Llama, train/valid separation, determinism, baselines and metrics. Offline and fast."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from autointerp.common.records import ActivationRecord
from autointerp.n2g import (N2GConfig, N2GModel, NeuronProbe, NextTokenSubstitutes, NGramLookup, TokenLookup,
                            TrainValidOverlapError, Trie, augment, evaluate_predictions, firing_metrics,
                            fit_and_evaluate, fit_neuron, make_line, neutral_token_id, prune, sample_lines,
                            saliency, saliency_batch)
from autointerp.n2g.fit import _post_context, candidate_lengths
from autointerp.simulate.scoring import score_simulations
from tiny_models import random_token_ids, tiny_subject


# ------------------------------------------------------------------------------------------------ the trie

def _sample(tokens, acts, imp_for_last):
    """A hand-built sample whose last token activates; imp_for_last[k] = importance of token k for it."""
    n = len(tokens)
    imp = np.zeros((n, n))
    imp[:, n - 1] = imp_for_last
    return tokens, np.array(acts, dtype=float), imp


def test_toy_example_of_section_8():
    cfg = N2GConfig()
    a = sample_lines([_sample([" the", " cat", " sat"], [0, 0, 0.9], [0.1, 0.9, 1.0])], [False] * 3, cfg)
    b = sample_lines([_sample([" big", " dog", " sat"], [0, 0, 0.7], [0.9, 0.1, 1.0])], [False] * 3, cfg)
    assert [ln.tokens for ln in a] == [(" sat", " cat")]            # trailing " the" wildcard cut
    assert [ln.tokens for ln in b] == [(" sat", None, " big")]
    trie = Trie.build(a + b)
    assert trie.predict([" the", " big", " cat", " sat"])[-1] == pytest.approx(0.9)
    assert trie.predict([" big", " dog", " sat"])[-1] == pytest.approx(0.7)
    assert trie.predict([" dog", " sat"])[-1] == 0.0
    assert trie.predict([" the", " big", " cat", " sat"]).tolist()[:3] == [0.0, 0.0, 0.0]


def test_merge_hands_continuations_to_the_wildcard():
    lines = [make_line(["a", "x", "b"], [1, 1, 1], [0.8, 0, 0], 0.8),     # x is not an end: removed
             make_line(["a", None, "c"], [1, 0, 1], [0.6, 0, 0], 0.6),
             make_line(["a", "y"], [1, 1], [0.9, 0], 0.9)]                 # y ends: kept
    trie = Trie.build(lines)
    a = trie.root.children["a"]
    assert set(a.children) == {"y"}
    assert set(a.wildcard.children) == {"c", "b"}
    assert trie.predict(["b", "x", "a"])[-1] == pytest.approx(0.8)        # x now goes through the wildcard
    assert trie.predict(["b", "z", "a"])[-1] == pytest.approx(0.8)
    assert trie.predict(["c", "q", "a"])[-1] == pytest.approx(0.6)
    assert trie.predict(["y", "a"])[-1] == pytest.approx(0.9)
    # without merging the specific branch stays and an unseen middle token finds nothing via it
    raw = Trie.build(lines, merge=False)
    assert raw.predict(["b", "z", "a"])[-1] == 0.0
    assert set(p for p, _ in trie.patterns()) == {("a", "y"), ("a", None, "c"), ("a", None, "b")}


def test_greedy_single_path_and_deepest_end():
    # exact " y" is preferred even though the wildcard path would reach a deeper END (no backtracking)
    trie = Trie.build([make_line(["a", "y"], [1, 1], [0.9, 0], 0.9),
                       make_line(["a", None, "c"], [1, 0, 1], [0.6, 0, 0], 0.6)])
    assert trie.predict(["c", "y", "a"])[-1] == pytest.approx(0.9)
    assert trie.predict(["c", "q", "a"])[-1] == pytest.approx(0.6)
    # the deepest END passed counts even if the walk continues to a node without END (spec §8, not Rust's 0)
    trie = Trie.build([make_line(["a"], [1], [0.6], 0.6), make_line(["a", "b", "c"], [1, 1, 1], [0.9, 0, 0], 0.9)])
    assert trie.predict(["x", "b", "a"])[-1] == pytest.approx(0.6)
    assert trie.predict(["c", "b", "a"])[-1] == pytest.approx(0.9)
    # a first token that is not an activating node predicts nothing
    trie = Trie.build([make_line(["a"], [1], [0.3], 0.7)])
    assert trie.predict(["a"])[-1] == 0.0


def test_nested_wildcards_merge_and_duplicate_values_combine():
    lines = [make_line(["a", None, None, "d"], [1, 0, 0, 1], [1, 0, 0, 0], 0.6),
             make_line(["a", None, "x", "e"], [1, 0, 1, 1], [1, 0, 0, 0], 0.8),
             make_line(["a", None, "x", "e"], [1, 0, 1, 1], [1, 0, 0, 0], 1.0)]
    for combine, want in (("mean", 0.9), ("max", 1.0), ("first", 0.8)):
        trie = Trie.build(lines, combine=combine)
        assert trie.predict(["e", "x", "q", "a"])[-1] == pytest.approx(want)
        assert trie.predict(["e", "z", "q", "a"])[-1] == pytest.approx(want)  # x merged into the inner wildcard
        assert trie.predict(["d", "z", "q", "a"])[-1] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        make_line([None, "a"], [0, 1], [0, 0], 0.5)


def test_lines_use_importance_and_inherit_positions_from_the_original():
    cfg = N2GConfig()
    toks = ["p", "q", "r", "s"]
    imp = np.zeros((4, 4))
    imp[1, 3] = 0.8      # q important for s
    imp[0, 2] = 0.9      # p important for r
    acts = np.array([0.0, 0.2, 0.6, 0.9])
    variant_imp = np.zeros((4, 4))
    variant_imp[0, 3] = 0.95
    samples = [(toks, acts, imp), (["p", "Q", "r", "s"], acts * 0 + [0, 0, 0, 0.55], variant_imp)]
    lines = sample_lines(samples, [False, False, False, True], cfg)
    assert [(ln.tokens, ln.value) for ln in lines] == [
        (("r", None, "p"), 0.6), (("s", None, "q"), 0.9),
        (("s", None, "Q", "p"), 0.55)]   # Q inherits the original's important slot; p important in the variant
    # a special token is never important context (it becomes a wildcard, so the line is cut there)
    lines = sample_lines([(toks, acts, imp)], [True, False, False, False], cfg)
    assert lines[0].tokens == ("r",)


# ------------------------------------------------------------------------------------------- tiny model

@pytest.fixture(scope="module")
def tiny():
    return tiny_subject(0)


def test_neutral_token():
    assert neutral_token_id(SimpleNamespace(pad_token_id=None, eos_token_id=50256, unk_token_id=50256,
                                            bos_token_id=50256)) == 50256  # GPT-2: never id 1 (a quote)
    assert neutral_token_id(SimpleNamespace(pad_token_id=2, eos_token_id=2, unk_token_id=0, bos_token_id=1)) == 2
    assert neutral_token_id(SimpleNamespace(pad_token_id=None, eos_token_id=None, unk_token_id=0,
                                            bos_token_id=None)) == 0
    with pytest.raises(ValueError):
        neutral_token_id(SimpleNamespace())


def test_probe_matches_plain_forward(tiny):
    from tiny_models import brute_force_activations

    ids = random_token_ids(3, 12, seed=4)
    want = brute_force_activations(tiny, ids, "blocks.{layer}.mlp.hook_post", 1)[:, :, 7]
    got = NeuronProbe(tiny, 1, 7).activations(ids)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_pruning_against_brute_force(tiny):
    cfg = N2GConfig(prune_chunk=None)
    checked = 0
    for seed in range(4):
        ids = random_token_ids(1, 24, seed=seed)[0]
        for neuron in range(0, tiny.d_mlp, 5):
            probe = NeuronProbe(tiny, 1, neuron)
            acts = probe.activations(ids[None])[0]
            if acts.max() <= 0:
                assert prune(probe, ids, acts, config=cfg) == []
                continue
            p = int(acts.argmax())
            want = None
            for n in range(1, p + 2):   # one single-row forward per candidate length
                row = probe.activations(ids[None, p - n + 1:p + 1])[0]
                if row[-1] >= row.max() and row[-1] > 0.5 * acts[p]:
                    want = n
                    break
            n_before = probe.log.n_passes
            (pp,) = prune(probe, ids, acts, config=cfg)
            assert probe.log.n_passes == n_before + 1           # one batch for all candidates
            (chunked,) = prune(probe, ids, acts, config=N2GConfig(prune_chunk=3))   # same answer
            assert (chunked.token_ids, chunked.start) == (pp.token_ids, pp.start)
            assert chunked.truncated == pytest.approx(pp.truncated, rel=1e-4)
            assert pp.pivot + 1 == want and pp.start == p - want + 1 and pp.source_pivot == p
            assert pp.token_ids[:pp.pivot + 1] == [int(t) for t in ids[pp.start:p + 1]]
            assert len(pp.token_ids) == pp.pivot + 1 + min(5, len(ids) - p - 1)  # no sentence ends here
            assert pp.initial == pytest.approx(acts[p]) and pp.truncated > 0.5 * acts[p]
            checked += 1
    assert checked >= 10


def test_post_context_and_candidates():
    toks = ["A", " b", " c", ".", " d", " e"]
    assert _post_context(toks, 1, 5, ".!\n") == 2          # " c", "." (the sentence end is kept)
    assert _post_context(toks, 3, 5, ".!\n") == 0          # the pivot ends its sentence
    assert _post_context(toks, 4, 5, ".!\n") == 1
    assert candidate_lengths(3, N2GConfig()) == [1, 2, 3, 4]
    assert candidate_lengths(11, N2GConfig(prune_step=5, max_context=30)) == [5, 10, 12]
    assert candidate_lengths(40, N2GConfig(prune_step=5, max_context=30)) == [5, 10, 15, 20, 25, 30]


def test_saliency_against_brute_force(tiny):
    probe = NeuronProbe(tiny, 1, 3)
    mask = neutral_token_id(tiny.tokenizer)
    assert mask != 1
    prompts = [list(random_token_ids(1, 9, seed=7)[0]), list(random_token_ids(1, 6, seed=8)[0])]
    n_before = probe.log.n_passes
    results = saliency(probe, prompts, mask)
    assert probe.log.n_passes == n_before + 1
    for ids, (acts, imp) in zip(prompts, results):
        assert (saliency_batch(ids, mask)[1:].diagonal() == mask).all()
        base = probe.activations(np.array([ids]))[0]
        np.testing.assert_allclose(acts, base, atol=1e-5)
        for k in range(len(ids)):
            masked = list(ids)
            masked[k] = mask
            m = probe.activations(np.array([masked]))[0]
            for j in range(len(ids)):
                want = 1 - m[j] / base[j] if base[j] > 0 else 0.0
                assert imp[k, j] == pytest.approx(want, abs=1e-4)
            assert np.allclose(imp[k, :k], 0, atol=1e-4)      # causal: no effect on earlier positions


def test_next_token_substitutes(tiny):
    probe = NeuronProbe(tiny, 0, 0)
    src = NextTokenSubstitutes.from_probe(probe, N2GConfig(word_pattern=r"w\d+"))
    ids = [int(t) for t in random_token_ids(1, 8, seed=3)[0]]
    out = src(ids, [0, 2, 5], 3)
    assert 0 not in out and set(out) == {2, 5}
    logits = probe.logits(np.array([ids]))[0]
    for k, subs in out.items():
        assert len(subs) == 3 and ids[k] not in subs and 0 not in subs
        order = [t for t in np.argsort(-logits[k - 1], kind="stable") if t not in (0, ids[k])]
        assert subs == [int(t) for t in order[:3]]
    pp = prune(probe, ids, config=N2GConfig())[0]
    imp = np.ones((len(pp.token_ids), len(pp.token_ids)))
    variants = augment(pp, imp, lambda i, pos, n: {p: [i[p], 5, 5] for p in pos}, {0}, N2GConfig())
    assert len({tuple(v) for v in variants}) == len(variants) and tuple(pp.token_ids) not in map(tuple, variants)


def _entry(probe, n_train=3, n_valid=3, length=16, seed=0):
    ids = random_token_ids(n_train + n_valid, length, seed=seed)
    from autointerp.extract.records import TokenDecoder

    decode = TokenDecoder(probe.tokenizer)
    acts = probe.activations(ids)
    recs = [ActivationRecord(decode(x), [float(v) for v in a], excerpt_id=100 + i)
            for i, (x, a) in enumerate(zip(ids, acts))]
    token_ids = {100 + i: list(map(int, x)) for i, x in enumerate(ids)}
    order = np.argsort(-acts.max(axis=1), kind="stable")
    train = [recs[i] for i in order[:n_train]]
    valid = [recs[i] for i in order[n_train:]]
    entry = {"train": train, "valid": valid, "max_activation": float(acts.max()),
             "valid_sources": ["top"] * len(valid)}
    return entry, token_ids


def test_fit_predict_and_score(tiny):
    probe = NeuronProbe(tiny, 1, 11)
    entry, token_ids = _entry(probe)
    cfg = N2GConfig(word_pattern=r"w\d+")
    model, scores = fit_and_evaluate(probe, entry, token_ids, config=cfg)
    assert model.stats["n_pivots"] >= 3 and model.stats["n_lines"] >= 3 and model.stats["n_variants"] > 0
    assert model.stats["stored_max_abs_diff"] < 1e-5
    preds = model.predict_records(entry["valid"])
    want = score_simulations([r.activations for r in entry["valid"]], [p * model.a_max for p in preds],
                             entry["valid_sources"])
    assert scores["score"] == want["score"] or (math.isnan(scores["score"]) and math.isnan(want["score"]))
    assert {"firing_precision", "firing_recall", "firing_f1"} <= set(scores)
    # the pivot of every training example is predicted from its own training text
    for r in entry["train"]:
        p = int(np.argmax(r.activations))
        assert model.predict(r.tokens)[p] > 0
    off = fit_neuron(probe, entry["train"], token_ids, a_max=entry["max_activation"],
                     config=N2GConfig(augmentation="off"))
    assert off.stats["n_variants"] == 0 and len(off.lines) <= len(model.lines)


def test_train_valid_separation_enforced(tiny):
    probe = NeuronProbe(tiny, 1, 11)
    entry, token_ids = _entry(probe)
    leaked = dict(entry, train=entry["train"] + [entry["valid"][0]])
    with pytest.raises(TrainValidOverlapError):
        fit_and_evaluate(probe, leaked, token_ids, config=N2GConfig(augmentation="off"))
    with pytest.raises(TrainValidOverlapError):
        fit_and_evaluate(probe, entry, token_ids, extra_records=[entry["valid"][-1]],
                         config=N2GConfig(augmentation="off"))
    with pytest.raises(TrainValidOverlapError):
        fit_neuron(probe, entry["train"], token_ids, forbidden_excerpt_ids=[entry["train"][0].excerpt_id])


def test_deterministic_graph(tiny):
    probe = NeuronProbe(tiny, 1, 11)
    entry, token_ids = _entry(probe, seed=2)
    cfg = N2GConfig(word_pattern=r"w\d+")
    a = fit_neuron(probe, entry["train"], token_ids, a_max=entry["max_activation"], config=cfg)
    b = fit_neuron(NeuronProbe(tiny, 1, 11), entry["train"], token_ids, a_max=entry["max_activation"], config=cfg)
    assert [ln.to_dict() for ln in a.lines] == [ln.to_dict() for ln in b.lines]
    assert a.to_dot() == b.to_dot() and a.describe() == b.describe()
    c = N2GModel.from_dict(json.loads(a.to_json()))
    for r in entry["valid"]:
        assert a.predict(r.tokens).tolist() == c.predict(r.tokens).tolist()


# ------------------------------------------------------------------------------ rendering, baselines, metrics

def test_dot_and_description():
    lines = [make_line([" red", " the"], [1, 0.9], [0.9, 0], 0.9),
             make_line([" blue", " the"], [1, 0.8], [0.8, 0], 0.8),
             make_line([" green"], [1], [0.6], 0.6), make_line(["\n", None, "x"], [1, 0, 0.95], [0.7, 0, 0], 0.7)]
    model = N2GModel(lines, a_max=2.0)
    assert model.describe() == 'tokens " red", " blue" (after " the"); "\\n" (after "x" _); " green"'
    dot = model.to_dot()
    assert dot.startswith('digraph "neuron" {') and "rankdir=RL" in dot
    assert dot.count(" the\"") == 1            # deduplicated by (depth, token)
    assert 'label="\\"\\\\n\\""' in dot         # whitespace-only token: quoted, newline visible as \n
    assert "penwidth=7" in dot and "#ff" in dot
    assert N2GModel([], a_max=1.0).describe() == "no pattern"
    if shutil.which("dot"):
        assert "<svg" in model.render_svg()
    else:
        with pytest.raises(RuntimeError, match="Graphviz"):
            model.render_svg()


def test_token_lookup_and_ngram_baselines():
    train = [ActivationRecord(["a", "b", "a", "c"], [1.0, 4.0, 3.0, 0.0]),
             ActivationRecord(["c", "b", "d"], [2.0, 1.0, 0.0])]
    tl = TokenLookup.fit(train, a_max=4.0)
    assert tl.table == {"a": 0.75, "b": 1.0, "c": 0.5, "d": 0.0}
    assert tl.predict(["b", "z", "a"]).tolist() == [1.0, 0.0, 0.75]
    ng = NGramLookup.fit(train, a_max=4.0, n=2)
    assert ng.table == {("a", "b"): 1.0, ("b", "a"): 0.75, ("c",): 0.5}
    assert ng.predict(["a", "b", "x", "b", "a"]).tolist() == [0.0, 1.0, 0.0, 0.0, 0.75]
    assert ng.predict(["c", "c"]).tolist() == [0.5, 0.0]


def test_firing_metrics_on_fixed_inputs():
    truth = [[0.0, 0.6, 0.9, 0.1], [0.5, 0.2]]
    pred = [[0.7, 0.6, 0.0, 0.0], [0.5, 0.0]]
    m = firing_metrics(truth, pred)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    none = firing_metrics([[0.9, 0.0]], [[0.0, 0.0]])
    assert math.isnan(none["precision"]) and none["recall"] == 0.0 and none["f1"] == 0.0
    quiet = firing_metrics([[0.1]], [[0.0]])
    assert math.isnan(quiet["precision"]) and math.isnan(quiet["recall"]) and math.isnan(quiet["f1"])
    recs = [ActivationRecord(["x"] * 4, [0.0, 1.2, 1.8, 0.2]), ActivationRecord(["y"] * 2, [1.0, 0.4])]
    out = evaluate_predictions(pred, recs, a_max=2.0, sources=["top", "random"])
    assert out["firing_tp"] == 2 and out["firing_fp"] == 1
    want = score_simulations([r.activations for r in recs], [np.array(p) * 2.0 for p in pred], ["top", "random"])
    assert out["score"] == pytest.approx(want["score"]) and out["score_random"] == pytest.approx(want["score_random"])
