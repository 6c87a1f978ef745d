"""Scoring: pooled correlation vs numpy, subsets, NaN rules, paired comparison, Wilcoxon vs brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from autointerp.simulate.scoring import (
    mean_sem,
    paired_comparison,
    pearson,
    score_sequence_simulations,
    score_simulations,
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


# --- Wilcoxon signed-rank ------------------------------------------------------------------------------------


def _brute_force(diffs):
    """Exact null distribution of W+ by enumerating all sign assignments of the non-zero |d| mid-ranks."""
    d = np.array([x for x in diffs if x != 0], dtype=float)
    a = np.abs(d)
    ranks = np.array([np.sum(a < v) + (np.sum(a == v) + 1) / 2 for v in a])  # mid-ranks, independently
    obs = ranks[d > 0].sum()
    ws = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))])
    mean = len(d) * (len(d) + 1) / 4
    p_exact = np.mean(np.abs(ws - mean) >= abs(obs - mean) - 1e-9)
    return obs, ws.mean(), ws.var(), p_exact


@pytest.mark.parametrize("diffs", [
    [0.5, -1.2, 2.0, 0.3, 3.1, -0.1, 1.7, 0.9, 2.2, 1.1, -0.4],     # no ties, no zeros
    [1, 1, -1, 2, 2, 2, 0, 3, -3, 4, 0, 5, 5],                     # ties and zeros
    [0.2, 0.2, 0.2, -0.2, 0.4, 0.4, -0.6, 0.8, 1.0, 1.0, 1.2, 0.0],
])
def test_wilcoxon_matches_brute_force(diffs):
    w = wilcoxon_signed_rank(diffs)
    obs, mean, var, p_exact = _brute_force(diffs)
    n = sum(1 for x in diffs if x != 0)
    assert w["statistic"] == pytest.approx(obs) and w["n_nonzero"] == n
    assert mean == pytest.approx(n * (n + 1) / 4)
    assert w["z"] == pytest.approx((obs - mean) / math.sqrt(var), rel=1e-12)  # tie-corrected variance is exact
    assert abs(w["p_value"] - p_exact) < 0.03  # the normal approximation is close at n ~ 10-13


def test_wilcoxon_known_value_and_degenerate():
    w = wilcoxon_signed_rank(range(1, 11))  # W+ = 55, var = 96.25: z = 2.8031, p = 0.005062
    assert w["statistic"] == 55 and w["p_value"] == pytest.approx(0.0050620, abs=1e-6)
    assert math.isnan(wilcoxon_signed_rank([0.0, 0.0])["p_value"])


def test_paired_comparison_known_sign():
    rng = np.random.default_rng(1)
    b = rng.uniform(0, 0.5, size=40)
    a = b + 0.1 + rng.normal(0, 0.03, size=40)
    out = paired_comparison(list(a), list(b), n_boot=2000)
    assert out["mean_diff"] == pytest.approx(np.mean(a - b)) and 0 < out["ci_low"] < out["mean_diff"] < out["ci_high"]
    assert out["wilcoxon_p"] < 1e-6 and out["n"] == 40
    rev = paired_comparison(list(b), list(a), n_boot=2000)
    assert rev["ci_high"] < 0 and rev["mean_diff"] == pytest.approx(-out["mean_diff"])
    assert rev["wilcoxon_p"] == pytest.approx(out["wilcoxon_p"])
    again = paired_comparison(list(a), list(b), n_boot=2000)
    assert (again["ci_low"], again["ci_high"]) == (out["ci_low"], out["ci_high"])  # seeded


def test_paired_comparison_pairs_by_key_and_drops_nonfinite():
    a = {"n1": 0.5, "n2": 0.4, "n3": math.nan, "n4": 0.9, "only_a": 0.1}
    b = {"n1": 0.3, "n2": 0.1, "n3": 0.2, "n4": None, "only_b": 0.7}
    out = paired_comparison(a, b, n_boot=500)
    assert out["n"] == 2 and out["n_excluded_nonfinite"] == 2
    assert (out["n_only_a"], out["n_only_b"]) == (1, 1)
    assert out["mean_diff"] == pytest.approx(0.25)
    empty = paired_comparison({}, {})
    assert empty["n"] == 0 and math.isnan(empty["mean_diff"]) and math.isnan(empty["wilcoxon_p"])
