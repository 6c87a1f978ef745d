"""Scoring: pooled correlation vs numpy, subsets, NaN rules; paired statistics (scipy) vs brute force and hand values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from autointerp.simulate.scoring import (
    EXACT_ENUMERATION_MAX_N,
    mean_sem,
    paired_comparison,
    pearson,
    score_sequence_simulations,
    score_simulations,
    smallest_attainable_p,
    wilcoxon_signed_rank,
)
from autointerp.simulate import SequenceSimulation

TRUE = [[0.0, 1.5, 3.0, -0.2], [2.0, 0.1, 0.0], [0.0, 0.3, -0.1, 0.0, 4.0], [1.0, 0.0]]
EXP = [[0.1, 2.0, 6.5, 0.0], [5.0, 1.0, 0.2], [0.4, 0.0, 0.3, 1.0, 9.0], [0.0, 3.0]]
SOURCES = ["top", "top", "random", "random"]


def test_score_is_one_pooled_correlation():
    out = score_simulations(TRUE, EXP, SOURCES)
    t, p = np.concatenate(TRUE), np.concatenate(EXP)
    assert out["score"] == pytest.approx(np.corrcoef(t, p)[0, 1], abs=1e-12)
    per_seq_mean = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(TRUE, EXP)])
    assert abs(out["score"] - per_seq_mean) > 1e-3  # not the mean of per-sequence correlations
    top_t, top_p = np.concatenate(TRUE[:2]), np.concatenate(EXP[:2])
    rnd_t, rnd_p = np.concatenate(TRUE[2:]), np.concatenate(EXP[2:])
    assert out["score_top"] == pytest.approx(np.corrcoef(top_t, top_p)[0, 1], abs=1e-12)
    assert out["score_random"] == pytest.approx(np.corrcoef(rnd_t, rnd_p)[0, 1], abs=1e-12)
    assert out["rsquared"] == pytest.approx(1 - np.mean((t - p) ** 2) / np.mean(t ** 2))
    assert out["absolute_dev_explained"] == pytest.approx(1 - np.mean(np.abs(t - p)) / np.mean(np.abs(t)))
    assert (out["n_tokens"], out["n_top_tokens"], out["n_random_tokens"]) == (14, 7, 7)
    assert out["n_unaligned"] == 0 and out["is_nan"] is False and out["n_sequences"] == 4


def test_unaligned_positions_are_excluded_and_counted():
    exp = [list(s) for s in EXP]
    exp[0][2] = math.nan
    exp[2][4] = math.nan
    out = score_simulations(TRUE, exp, SOURCES)
    keep = [(a, b) for ts, es in zip(TRUE, exp) for a, b in zip(ts, es) if not math.isnan(b)]
    t, p = np.array(keep).T
    assert out["score"] == pytest.approx(np.corrcoef(t, p)[0, 1], abs=1e-12)
    assert out["n_unaligned"] == 2 and out["n_tokens"] == 12


def test_constant_or_empty_gives_nan_not_exception():
    zeros = [[0.0] * len(s) for s in TRUE]
    out = score_simulations(TRUE, zeros, SOURCES)
    assert math.isnan(out["score"]) and out["is_nan"] is True
    assert out["rsquared"] == pytest.approx(1 - np.mean(np.concatenate(TRUE) ** 2) / np.mean(np.concatenate(TRUE) ** 2))
    # Equal values whose float mean is not exactly the value: np.corrcoef returns 0.0 here, we return NaN.
    assert np.mean([0.1] * 3) != 0.1 and np.corrcoef([1, 2, 3], [0.1] * 3)[0, 1] == 0.0
    assert math.isnan(score_simulations([[1, 2, 3]], [[0.1] * 3], ["top"])["score"])
    out = score_simulations([], [], [])
    assert math.isnan(out["score"]) and math.isnan(out["rsquared"]) and out["n_tokens"] == 0
    out = score_simulations(TRUE, EXP, ["top"] * 4)
    assert math.isnan(out["score_random"]) and not math.isnan(out["score_top"])
    assert math.isnan(pearson([1.0], [2.0]))
    with pytest.raises(ValueError):
        score_simulations([[1.0, 2.0]], [[1.0]], ["top"])


def test_score_sequence_simulations_counts_flags():
    sims = [SequenceSimulation(["a", "b", "c"], [1.0, 0.0, math.nan], [{1: 1.0}, {}, {}],
                               ["ok", "no_digit", "unaligned"]),
            SequenceSimulation(["d", "e"], [3.0, 0.5], [{3: 1.0}, {0: .5, 1: .5}], ["ok", "ok"], n_merged=1)]
    out = score_sequence_simulations([[1.0, 0.0, 9.0], [2.0, 0.3]], sims, ["top", "random"])
    assert out["score"] == pytest.approx(np.corrcoef([1, 0, 2, 0.3], [1, 0, 3, 0.5])[0, 1])
    assert (out["n_unaligned"], out["n_no_digit"], out["n_merged"], out["n_tokens"]) == (1, 1, 1, 4)


def test_mean_sem_ignores_nan():
    out = mean_sem([1.0, math.nan, 3.0, None, 5.0])
    assert out == {"mean": 3.0, "sem": pytest.approx(2.0 / math.sqrt(3)), "n": 3, "n_nan": 2}
    one = mean_sem([2.0, math.nan])
    assert one["mean"] == 2.0 and math.isnan(one["sem"]) and one["n_nan"] == 1
    assert math.isnan(mean_sem([])["mean"])


# --- Wilcoxon signed-rank (scipy.stats.wilcoxon) ---------------------------------------------------------------

STATS = {"n_boot": 2000, "seed": 0, "confidence_level": 0.95, "alpha": 0.05}


def _brute_force(diffs):
    """Exact null distribution of W+ by enumerating all sign assignments of the non-zero |d| mid-ranks."""
    d = np.array([x for x in diffs if x != 0], dtype=float)
    a = np.abs(d)
    ranks = np.array([np.sum(a < v) + (np.sum(a == v) + 1) / 2 for v in a])  # mid-ranks, independently
    obs = ranks[d > 0].sum()
    ws = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))])
    mean = len(d) * (len(d) + 1) / 4
    p_exact = np.mean(np.abs(ws - mean) >= abs(obs - mean) - 1e-9)
    return obs, p_exact


@pytest.mark.parametrize("diffs, method", [
    ([0.5, -1.2, 2.0, 0.3, 3.1, -0.1, 1.7, 0.9, 2.2, 1.1, -0.4], "exact"),            # no ties, no zeros
    ([1, 1, -1, 2, 2, 2, 0, 3, -3, 4, 0, 5, 5], "exact-enumeration"),                  # ties and zeros
    ([0.2, 0.2, 0.2, -0.2, 0.4, 0.4, -0.6, 0.8, 1.0, 1.0, 1.2, 0.0], "exact-enumeration"),
])
def test_wilcoxon_small_n_is_exact_even_with_ties(diffs, method):
    w = wilcoxon_signed_rank(diffs)
    obs, p_exact = _brute_force(diffs)
    n = sum(1 for x in diffs if x != 0)
    assert w["method"] == method and w["n_nonzero"] == n and w["n_zero"] == len(diffs) - n
    assert w["statistic"] == pytest.approx(min(obs, n * (n + 1) / 2 - obs))  # scipy's two-sided min(W+, W-)
    assert w["p_value"] == pytest.approx(p_exact, abs=1e-12)  # exact, not the normal approximation


def test_wilcoxon_hand_checkable_exact_values():
    # n = 6, every difference positive: only 1 of the 2**6 sign patterns is as extreme on each side: p = 2/64.
    w = wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert w["p_value"] == 0.03125 and w["method"] == "exact" and w["statistic"] == 0
    # Zeros are dropped first (n_zero), the rest is the same test.
    w = wilcoxon_signed_rank([0.0, 0.1, 0.2, 0.0, 0.3, 0.4, 0.5, 0.6])
    assert (w["p_value"], w["n_nonzero"], w["n_zero"]) == (0.03125, 6, 2)
    # n = 10 all positive: 2/1024 (the old normal approximation gave 0.00506).
    assert wilcoxon_signed_rank(range(1, 11))["p_value"] == pytest.approx(2 / 1024, abs=1e-15)
    # n = 4, ranks 1..4, positive ones 1 and 2: W+ = 3. The 16 sign patterns give W+ = 0,1,2,3,3,4,4,5,5,6,6,7,7,
    # 8,9,10, so P(W+ <= 3) = 5/16 and the two-sided p is 10/16.
    assert wilcoxon_signed_rank([-3.0, -4.0, 1.0, 2.0])["p_value"] == pytest.approx(10 / 16, abs=1e-15)
    assert math.isnan(wilcoxon_signed_rank([0.0, 0.0])["p_value"])
    assert wilcoxon_signed_rank([])["n_nonzero"] == 0


def test_wilcoxon_equals_scipy_on_a_small_example():
    from scipy import stats

    d = [0.12, -0.05, 0.31, 0.07, -0.2, 0.44, 0.03, 0.26]
    ref = stats.wilcoxon(d, method="exact")
    w = wilcoxon_signed_rank(d)
    assert w["p_value"] == ref.pvalue and w["statistic"] == ref.statistic


def test_wilcoxon_normal_approximation_beyond_the_exact_range():
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 1.0, size=60)  # no ties, n > 50: normal approximation, checked by hand
    w = wilcoxon_signed_rank(d)
    n = len(d)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    z = (ranks[d > 0].sum() - n * (n + 1) / 4) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    assert w["method"] == "normal" and w["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    # ties beyond the enumeration limit: normal with the tie-corrected variance
    t = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, -6, 7, 8][: EXACT_ENUMERATION_MAX_N + 1]
    assert len(t) > EXACT_ENUMERATION_MAX_N
    w = wilcoxon_signed_rank(t)
    a = np.abs(np.array(t, dtype=float))
    mid = np.array([np.sum(a < v) + (np.sum(a == v) + 1) / 2 for v in a])
    m = len(t)
    _, counts = np.unique(a, return_counts=True)
    var = m * (m + 1) * (2 * m + 1) / 24 - np.sum(counts ** 3 - counts) / 48
    z = (mid[np.array(t) > 0].sum() - m * (m + 1) / 4) / math.sqrt(var)
    assert w["method"] == "normal" and w["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 5, 6, 9])
def test_smallest_attainable_p_is_scipys_most_extreme_exact_p(n):
    from scipy import stats

    assert smallest_attainable_p(n) == pytest.approx(stats.wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue)


def test_small_n_warning_at_five_not_at_six():
    five = paired_comparison([0.5, 0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5], **STATS)
    assert five["n"] == 5 and five["smallest_attainable_p"] == 0.0625 and "0.0625 > alpha 0.05" in five["warning"]
    assert five["wilcoxon_p"] == 0.0625  # the best it can do
    six = paired_comparison([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], **STATS)
    assert six["warning"] == "" and six["wilcoxon_p"] == 0.03125
    # zero differences do not count: 6 pairs with one tie are 5 informative ones
    tied = paired_comparison([0.5, 0.6, 0.7, 0.8, 0.9, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5, 0.3], **STATS)
    assert tied["n"] == 6 and tied["n_nonzero"] == 5 and tied["warning"]
    assert paired_comparison([1.0, 2.0], [1.0, 2.0], **STATS)["warning"]  # no non-zero difference at all


def test_bootstrap_ci_hand_checkable():
    # Two neurons with differences 0.2 and 0.5: resampled means are 0.2 (1/4), 0.35 (1/2), 0.5 (1/4), so the
    # 2.5th and 97.5th percentiles of the percentile bootstrap are 0.2 and 0.5.
    out = paired_comparison([0.3, 0.6], [0.1, 0.1], **STATS)
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(0.2), pytest.approx(0.5))
    const = paired_comparison([0.3, 0.4, 0.5], [0.1, 0.2, 0.3], **STATS)
    assert const["ci_low"] == pytest.approx(0.2) and const["ci_high"] == pytest.approx(0.2)
    one = paired_comparison([0.3], [0.1], **STATS)
    assert one["mean_diff"] == pytest.approx(0.2) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])


def test_paired_comparison_known_sign():
    rng = np.random.default_rng(1)
    b = rng.uniform(0, 0.5, size=40)
    a = b + 0.1 + rng.normal(0, 0.03, size=40)
    out = paired_comparison(list(a), list(b), **STATS)
    assert out["mean_diff"] == pytest.approx(np.mean(a - b)) and 0 < out["ci_low"] < out["mean_diff"] < out["ci_high"]
    assert out["wilcoxon_p"] == pytest.approx(2 / 2 ** 40) and out["n"] == 40 and out["warning"] == ""
    rev = paired_comparison(list(b), list(a), **STATS)
    assert rev["ci_high"] < 0 and rev["mean_diff"] == pytest.approx(-out["mean_diff"])
    assert rev["wilcoxon_p"] == pytest.approx(out["wilcoxon_p"])
    again = paired_comparison(list(a), list(b), **STATS)
    assert (again["ci_low"], again["ci_high"]) == (out["ci_low"], out["ci_high"])  # seeded
    other = paired_comparison(list(a), list(b), **{**STATS, "seed": 1})
    assert (other["ci_low"], other["ci_high"]) != (out["ci_low"], out["ci_high"])


def test_paired_comparison_pairs_by_key_and_drops_nonfinite():
    a = {"n1": 0.5, "n2": 0.4, "n3": math.nan, "n4": 0.9, "only_a": 0.1}
    b = {"n1": 0.3, "n2": 0.1, "n3": 0.2, "n4": None, "only_b": 0.7}
    out = paired_comparison(a, b, **STATS)
    assert out["n"] == 2 and out["n_excluded_nonfinite"] == 2
    assert (out["n_only_a"], out["n_only_b"]) == (1, 1)
    assert out["mean_diff"] == pytest.approx(0.25)
    empty = paired_comparison({}, {}, **STATS)
    assert empty["n"] == 0 and math.isnan(empty["mean_diff"]) and math.isnan(empty["wilcoxon_p"])
