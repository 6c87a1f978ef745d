"""Scores of simulations (explainer_anchors §5) and paired comparisons of scores across neurons.

``score_simulations`` pools all valid tokens of a neuron's sequences and takes ONE Pearson correlation (the
reference's aggregate ``ev_correlation_score``; not a mean of per-sequence correlations), plus the same on the
``top`` and ``random`` subsets, and the reference's R² and absolute-deviation-explained on the pooled vectors.

Unaligned positions (EV NaN: no prediction could be located) are excluded, and counted in ``n_unaligned``:
substituting a value would inject a number the simulator never produced (the reference's 0.0 for folded
newlines is such an artefact). Whether a position aligns depends on how the simulator tokenises the subject
token, not on the explanation, so explanations of one neuron are scored on the same tokens. ``no_digit``
positions keep their EV 0, as in the reference. Undefined scores are NaN, never an exception.

Paired statistics come from ``scipy.stats`` (docs/tables.md): the Wilcoxon signed-rank test with zero
differences dropped (Wilcoxon's method) and an exact null distribution at small n (``wilcoxon(method="exact")``
without ties; with tied |differences| the exact conditional distribution by enumerating every sign assignment
(``PermutationMethod``) up to ``EXACT_ENUMERATION_MAX_N`` differences; the tie-corrected normal approximation
beyond), and a paired percentile bootstrap (neurons resampled, seeded) of the mean difference.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than 2 points or either vector is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip(xc @ yc / math.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))


def _rsquared(t: np.ndarray, p: np.ndarray) -> float:
    denom = float(np.mean(t ** 2)) if len(t) else 0.0
    return 1.0 - float(np.mean((t - p) ** 2)) / denom if denom > 0 else math.nan


def _abs_dev_explained(t: np.ndarray, p: np.ndarray) -> float:
    denom = float(np.mean(np.abs(t))) if len(t) else 0.0
    return 1.0 - float(np.mean(np.abs(t - p))) / denom if denom > 0 else math.nan


def score_simulations(true_activations: Sequence[Sequence[float]], expected: Sequence[Sequence[float]],
                      sources: Sequence[str] | None = None) -> dict[str, Any]:
    """Scores of one explanation of one neuron over its sequences (``sources[i]``: "top" or "random")."""
    if len(true_activations) != len(expected):
        raise ValueError(f"{len(true_activations)} true sequences but {len(expected)} simulated ones")
    sources = list(sources) if sources is not None else ["top"] * len(expected)
    if len(sources) != len(expected):
        raise ValueError(f"{len(sources)} sources for {len(expected)} sequences")
    ts, ps, src = [], [], []
    n_unaligned = 0
    for i, (t, p) in enumerate(zip(true_activations, expected)):
        t, p = np.asarray(t, dtype=float), np.asarray(p, dtype=float)
        if t.shape != p.shape:
            raise ValueError(f"sequence {i}: {len(t)} true activations but {len(p)} expected values")
        ok = np.isfinite(t) & np.isfinite(p)
        n_unaligned += int(np.sum(~np.isfinite(p)))
        ts.append(t[ok]), ps.append(p[ok]), src.append(np.full(int(ok.sum()), sources[i], dtype=object))
    t = np.concatenate(ts) if ts else np.zeros(0)
    p = np.concatenate(ps) if ps else np.zeros(0)
    s = np.concatenate(src) if src else np.zeros(0, dtype=object)
    score = pearson(t, p)
    out = {
        "score": score,
        "score_top": pearson(t[s == "top"], p[s == "top"]),
        "score_random": pearson(t[s == "random"], p[s == "random"]),
        "rsquared": _rsquared(t, p),
        "absolute_dev_explained": _abs_dev_explained(t, p),
        "n_tokens": int(len(t)),
        "n_top_tokens": int(np.sum(s == "top")),
        "n_random_tokens": int(np.sum(s == "random")),
        "n_unaligned": n_unaligned,
        "n_sequences": len(expected),
        "is_nan": math.isnan(score),
    }
    return out


def score_sequence_simulations(true_activations: Sequence[Sequence[float]], simulations: Sequence[Any],
                               sources: Sequence[str] | None = None) -> dict[str, Any]:
    """``score_simulations`` on ``SequenceSimulation`` objects, adding their flag counts (no_digit, merged)."""
    out = score_simulations(true_activations, [s.expected_values for s in simulations], sources)
    out["n_no_digit"] = sum(s.n_no_digit for s in simulations)
    out["n_merged"] = sum(s.n_merged for s in simulations)
    return out


def mean_sem(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and standard error (ddof=1) of the finite values; ``n`` used, ``n_nan`` ignored (NaN/inf/None)."""
    arr = np.array([math.nan if v is None else float(v) for v in values], dtype=float)
    finite = arr[np.isfinite(arr)]
    n = len(finite)
    return {"mean": float(finite.mean()) if n else math.nan,
            "sem": float(finite.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan,
            "n": n, "n_nan": int(len(arr) - n)}


# Thresholds of the Wilcoxon method choice (scipy's own "auto" rule uses the same two numbers).
EXACT_MAX_N = 50  # no ties: scipy's exact distribution of W+ up to this many non-zero differences
EXACT_ENUMERATION_MAX_N = 13  # ties: enumerate all 2**n sign assignments (8192) up to this many


def smallest_attainable_p(n_nonzero: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test can give with ``n_nonzero`` differences: every
    difference of one sign is the most extreme of the 2**n equally likely sign assignments, on either side, so
    p_min = 2 / 2**n (ties do not change this extreme). 1.0 when there is no difference at all."""
    return min(1.0, 2.0 ** (1 - n_nonzero)) if n_nonzero > 0 else 1.0


def wilcoxon_signed_rank(diffs: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired differences with ``scipy.stats.wilcoxon``.

    Zero differences are dropped first (Wilcoxon's method; ``n_zero`` says how many). The method is chosen
    explicitly and reported in ``method``: ``exact`` (no tied |d|, n <= EXACT_MAX_N: scipy's exact null
    distribution), ``exact-enumeration`` (tied |d|, n <= EXACT_ENUMERATION_MAX_N: all 2**n sign assignments of
    the mid-ranks, exact conditional on the ties) or ``normal`` (otherwise: scipy's normal approximation with the
    tie-corrected variance, no continuity correction). ``statistic`` is scipy's min(W+, W-)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    n_zero = int(np.sum(d == 0))
    d = d[d != 0]
    n = len(d)
    out: dict[str, Any] = {"statistic": math.nan, "p_value": math.nan, "method": "none", "n_nonzero": n,
                           "n_zero": n_zero, "smallest_attainable_p": smallest_attainable_p(n)}
    if n == 0:
        return out
    ties = len(np.unique(np.abs(d))) < n
    if not ties and n <= EXACT_MAX_N:
        method, name = "exact", "exact"
    elif ties and n <= EXACT_ENUMERATION_MAX_N:
        method, name = stats.PermutationMethod(n_resamples=2 ** n), "exact-enumeration"
    else:
        method, name = "asymptotic", "normal"
    res = stats.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided", method=method)
    out.update({"statistic": float(res.statistic), "p_value": float(res.pvalue), "method": name})
    return out


def bootstrap_mean_ci(values, *, n_boot: int, seed: int, confidence_level: float) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (``scipy.stats.bootstrap``, units resampled with
    ``numpy.random.default_rng(seed)``); (NaN, NaN) below 2 values."""
    from scipy import stats

    d = np.asarray(values, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    res = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=confidence_level,
                          method="percentile", vectorized=True, batch=max(1, 2_000_000 // len(d)),
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_comparison(scores_a: Mapping[Any, float] | Sequence[float], scores_b: Mapping[Any, float] | Sequence[float],
                      *, n_boot: int, seed: int, confidence_level: float, alpha: float) -> dict[str, Any]:
    """Compare two methods on the units (neurons, puzzles) both scored (finite in both): mean difference a − b,
    its paired percentile-bootstrap CI (``scipy.stats.bootstrap`` resampling the units' differences with
    ``numpy.random.default_rng(seed)``; NaN below 2 units) and the Wilcoxon signed-rank test (above).

    ``warning`` is non-empty when the test cannot mean anything: when even the most extreme outcome, every
    non-zero difference of one sign, would give a two-sided exact p above ``alpha`` (p_min = 2 / 2**n_nonzero).
    Sequences are paired by position, mappings by key."""
    if not isinstance(scores_a, Mapping):
        scores_a = dict(enumerate(scores_a))
    if not isinstance(scores_b, Mapping):
        scores_b = dict(enumerate(scores_b))
    common = [k for k in scores_a if k in scores_b]
    pairs = [(float(scores_a[k]), float(scores_b[k])) for k in common
             if scores_a[k] is not None and scores_b[k] is not None
             and math.isfinite(float(scores_a[k])) and math.isfinite(float(scores_b[k]))]
    a = np.array([x for x, _ in pairs], dtype=float)
    b = np.array([y for _, y in pairs], dtype=float)
    d = a - b
    n = len(d)
    out: dict[str, Any] = {
        "n": n, "n_only_a": len(scores_a) - len(common), "n_only_b": len(scores_b) - len(common),
        "n_excluded_nonfinite": len(common) - n,
        "mean_a": float(a.mean()) if n else math.nan, "mean_b": float(b.mean()) if n else math.nan,
        "mean_diff": float(d.mean()) if n else math.nan, "ci_low": math.nan, "ci_high": math.nan,
    }
    out["ci_low"], out["ci_high"] = bootstrap_mean_ci(d, n_boot=n_boot, seed=seed, confidence_level=confidence_level)
    w = wilcoxon_signed_rank(d)
    p_min = w["smallest_attainable_p"]
    warning = ""
    if p_min > alpha:
        warning = (f"{w['n_nonzero']} non-zero paired difference(s): the smallest attainable two-sided p is "
                   f"{p_min:.4g} > alpha {alpha:g}, so this comparison cannot be significant")
    out.update({"n_nonzero": w["n_nonzero"], "n_zero": w["n_zero"], "wilcoxon_statistic": w["statistic"],
                "wilcoxon_p": w["p_value"], "wilcoxon_method": w["method"], "smallest_attainable_p": p_min,
                "warning": warning})
    return out
