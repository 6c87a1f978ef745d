"""Scores of simulations (explainer_anchors §5) and paired comparisons of scores across neurons.

``score_simulations`` pools all valid tokens of a neuron's sequences and takes ONE Pearson correlation (the
reference's aggregate ``ev_correlation_score``; not a mean of per-sequence correlations), plus the same on the
``top`` and ``random`` subsets, and the reference's R² and absolute-deviation-explained on the pooled vectors.

Unaligned positions (EV NaN: no prediction could be located) are excluded, and counted in ``n_unaligned``:
substituting a value would inject a number the simulator never produced (the reference's 0.0 for folded
newlines is such an artefact). Whether a position aligns depends on how the simulator tokenises the subject
token, not on the explanation, so explanations of one neuron are scored on the same tokens. ``no_digit``
positions keep their EV 0, as in the reference. Undefined scores are NaN, never an exception.

Wilcoxon signed-rank (no scipy in this environment): zeros dropped (Wilcoxon's method, scipy's default), mid-ranks
for ties, the tie-corrected variance n(n+1)(2n+1)/24 − Σ(t³−t)/48, normal approximation without continuity
correction, two-sided; the statistic is W+ (sum of the ranks of positive differences).
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


def _midranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_v = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_signed_rank(diffs: Sequence[float]) -> dict[str, float | int]:
    """Two-sided Wilcoxon signed-rank test, normal approximation (details in the module docstring)."""
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return {"statistic": math.nan, "z": math.nan, "p_value": math.nan, "n_nonzero": 0}
    ranks = _midranks(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    _, tie_counts = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - float(np.sum(tie_counts ** 3 - tie_counts)) / 48
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(var) if var > 0 else 0.0
    return {"statistic": w_plus, "z": z, "p_value": math.erfc(abs(z) / math.sqrt(2)), "n_nonzero": n}


def paired_comparison(scores_a: Mapping[Any, float] | Sequence[float], scores_b: Mapping[Any, float] | Sequence[float],
                      *, n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Compare two methods on the neurons both scored (finite in both): mean difference a − b, paired bootstrap
    95% percentile CI of that mean (neurons resampled with replacement), and the Wilcoxon signed-rank p-value.
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
    if n:
        rng = np.random.default_rng(seed)
        chunk = max(1, 2_000_000 // n)  # bounded memory for many neurons
        boot = np.concatenate([d[rng.integers(0, n, size=(min(chunk, n_boot - i), n))].mean(axis=1)
                               for i in range(0, n_boot, chunk)])
        out["ci_low"], out["ci_high"] = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    w = wilcoxon_signed_rank(d)
    out.update({"wilcoxon_statistic": w["statistic"], "wilcoxon_z": w["z"], "wilcoxon_p": w["p_value"],
                "n_nonzero": w["n_nonzero"]})
    return out
