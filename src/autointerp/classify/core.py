"""Examples, prompts, strict answer parsing, metrics and chance floors of the detection and fuzzing scorers.

Examples come from a neuron's held-out (valid) records only, never from an excerpt the explainer saw (asserted):
- **detection**: each valid record is one excerpt; it is *activating* when its maximum activation reaches the
  weakest held-out top record's (so the top records are positive, and a random record is positive only if the
  neuron fires on it as strongly as on a top record);
- **fuzzing**: each activating record twice, once with its truly activating tokens marked (activation at least
  half the record's maximum) and once with as many marks on other, non-activating tokens (seeded); positive = the
  marks are the true ones.

Answers are parsed strictly: one line ``<number>: <0|1>`` (or yes/no) per excerpt; an excerpt whose answer is
missing, repeated with different values or malformed is *unparseable*: counted, never guessed, and scored as a
wrong answer (it is neither a correct yes nor a correct no).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

MARK_OPEN, MARK_CLOSE = "<<", ">>"


class LeakageError(AssertionError):
    """An example uses an excerpt the explainer saw."""


@dataclass(frozen=True)
class Example:
    record: int  # index among the neuron's valid records
    excerpt_id: int
    tokens: tuple[str, ...]
    label: bool  # detection: the neuron fires on it; fuzzing: the marks are the truly activating tokens
    marks: tuple[int, ...] = field(default_factory=tuple)  # fuzzing: marked token positions


def _check_held_out(records: Sequence[dict], train_excerpts: Iterable[int]) -> None:
    seen = set(train_excerpts)
    leaked = sorted({r["excerpt_id"] for r in records} & seen)
    if leaked:
        raise LeakageError(f"excerpts {leaked} are in the explainer's records: scorers use held-out records only")


def detection_examples(valid: Sequence[dict], train_excerpts: Iterable[int]) -> list[Example]:
    """One example per valid record (``source``, ``excerpt_id``, ``tokens``, ``activations``)."""
    _check_held_out(valid, train_excerpts)
    top_maxima = [max(r["activations"]) for r in valid if r["source"] == "top"]
    threshold = min(top_maxima) if top_maxima else math.inf
    return [Example(i, int(r["excerpt_id"]), tuple(r["tokens"]), max(r["activations"]) >= threshold)
            for i, r in enumerate(valid)]


def fuzzing_examples(valid: Sequence[dict], train_excerpts: Iterable[int], rng: np.random.Generator) -> list[Example]:
    """Two examples per activating valid record: true marks (positive) and as many marks elsewhere (negative)."""
    out = []
    for ex in detection_examples(valid, train_excerpts):
        if not ex.label:
            continue
        acts = np.asarray(valid[ex.record]["activations"], dtype=float)
        hot = np.flatnonzero(acts >= 0.5 * acts.max()) if acts.max() > 0 else np.array([int(acts.argmax())])
        cold = np.setdiff1d(np.arange(len(acts)), hot)
        out.append(Example(ex.record, ex.excerpt_id, ex.tokens, True, tuple(int(i) for i in hot)))
        if len(cold):
            wrong = rng.choice(cold, size=min(len(hot), len(cold)), replace=False)
            out.append(Example(ex.record, ex.excerpt_id, ex.tokens, False, tuple(sorted(int(i) for i in wrong))))
    return out


def one_line(token: str) -> str:
    """A token as the prompt shows it: line breaks escaped, so that every excerpt stays on its own line."""
    return token.replace("\r", "\\r").replace("\n", "\\n")


def excerpt_text(example: Example) -> str:
    marks = set(example.marks)
    return "".join(f"{MARK_OPEN}{one_line(t)}{MARK_CLOSE}" if i in marks else one_line(t)
                   for i, t in enumerate(example.tokens))


DETECTION_SYSTEM = (
    "We are studying a neuron in a language model. You get an explanation of what the neuron responds to and "
    "numbered text excerpts. For each excerpt, decide whether the neuron fires on it, judging by the explanation "
    "alone. Answer with exactly one line per excerpt, in order, formatted as '<number>: 1' if it fires or "
    "'<number>: 0' if it does not, and nothing else.")
FUZZING_SYSTEM = (
    "We are studying a neuron in a language model. You get an explanation of what the neuron responds to and "
    f"numbered text excerpts in which some tokens are marked {MARK_OPEN}like this{MARK_CLOSE}. For each excerpt, "
    "decide whether the marked tokens are the ones the explanation describes. Answer with exactly one line per "
    "excerpt, in order, formatted as '<number>: 1' if they are or '<number>: 0' if they are not, and nothing else.")


def render_messages(kind: str, explanation: str, examples: Sequence[Example]) -> list[dict]:
    """Chat messages asking about every example in one request (few calls per neuron)."""
    system = {"detection": DETECTION_SYSTEM, "fuzzing": FUZZING_SYSTEM}[kind]
    body = "\n".join(f"Excerpt {i}: {excerpt_text(ex)}" for i, ex in enumerate(examples, 1))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Explanation: {explanation.strip()}\n\n{body}\n\n"
                                        f"Answer for excerpts 1 to {len(examples)}."}]


_ANSWER = re.compile(r"^\s*(?:excerpt\s*)?(\d+)\s*[:.)=-]\s*(1|0|yes|no)\s*\.?\s*$", re.IGNORECASE)


def parse_answers(text: str, n: int) -> list[bool | None]:
    """The answer to each of ``n`` excerpts, or None where it is unparseable (missing, malformed, conflicting)."""
    found: dict[int, set[bool]] = {}
    for line in (text or "").splitlines():
        m = _ANSWER.match(line)
        if m and 1 <= int(m.group(1)) <= n:
            found.setdefault(int(m.group(1)), set()).add(m.group(2).lower() in ("1", "yes"))
    return [next(iter(found[i])) if len(found.get(i, ())) == 1 else None for i in range(1, n + 1)]


METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1")
FLOORS = ("always_yes", "always_no", "random", "random_low", "random_high")
FLOOR_COLUMNS = tuple(f"{m}_{f}" for m in METRICS for f in FLOORS)


def _rates(tp, fp, tn, fn) -> dict:
    """The five metrics of confusion counts (numpy arrays or scalars; NaN where a denominator is 0)."""
    tp, fp, tn, fn = (np.asarray(x, dtype=float) for x in (tp, fp, tn, fn))
    pos, neg = tp + fn, fp + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(pos > 0, tp / pos, np.nan)
        specificity = np.where(neg > 0, tn / neg, np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), np.where(pos > 0, 0.0, np.nan))
        total = pos + neg
        accuracy = np.where(total > 0, (tp + tn) / total, np.nan)
        both = np.where(np.isnan(recall), specificity, np.where(np.isnan(specificity), recall,
                                                                  (recall + specificity) / 2))
    return {"accuracy": accuracy, "balanced_accuracy": both, "precision": precision, "recall": recall, "f1": f1}


def metrics(labels: Sequence[bool], answers: Sequence[bool | None]) -> dict:
    """Accuracy, balanced accuracy (mean of recall and specificity), precision, recall, F1 and counts. An
    unparseable answer is a wrong one: a miss on a positive, not a correct no on a negative, never a yes."""
    tp = sum(1 for l, a in zip(labels, answers) if a is True and l)
    fp = sum(1 for l, a in zip(labels, answers) if a is True and not l)
    tn = sum(1 for l, a in zip(labels, answers) if a is False and not l)
    fn = sum(1 for l, a in zip(labels, answers) if a is False and l)
    pos = sum(1 for l in labels if l)
    neg = len(labels) - pos
    recall = tp / pos if pos else math.nan
    specificity = tn / neg if neg else math.nan
    return {"n_examples": len(labels), "n_positive": pos, "n_unparseable": sum(a is None for a in answers),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "accuracy": (tp + tn) / len(labels) if labels else math.nan,
            "balanced_accuracy": float(np.nanmean([recall, specificity])) if labels else math.nan,
            "precision": tp / (tp + fp) if tp + fp else math.nan, "recall": recall,
            # 2PR/(P+R) with every positive in the denominator (an unparseable positive is a miss)
            "f1": 2 * tp / (2 * tp + fp + (pos - tp)) if tp else (0.0 if pos else math.nan)}


def chance_floors(n_positive: int, n_negative: int, level: float = 0.95) -> dict:
    """What answering without reading the explanation scores on this example mix, for every metric:
    ``{metric}_always_yes``, ``{metric}_always_no``, and fair coin flips: the expected value ``{metric}_random``
    and the central ``level`` interval ``{metric}_random_low``/``_high``, exact over X ~ Bin(P, 1/2) correct
    yeses and Y ~ Bin(N, 1/2) correct noes (outcomes where the metric is undefined, e.g. precision with no yes,
    are left out)."""
    from scipy.stats import binom

    p, n = int(n_positive), int(n_negative)
    out: dict[str, float] = {}
    for name, rates in (("always_yes", _rates(p, n, 0, 0)), ("always_no", _rates(0, 0, n, p))):
        out.update({f"{m}_{name}": float(rates[m]) for m in METRICS})
    xs, ys = np.arange(p + 1), np.arange(n + 1)
    tp, tn = np.meshgrid(xs, ys, indexing="ij")
    probs = np.outer(binom.pmf(xs, p, 0.5), binom.pmf(ys, n, 0.5)).ravel()
    rates = _rates(tp.ravel(), n - tn.ravel(), tn.ravel(), p - tp.ravel())
    tail = (1 - level) / 2
    for m in METRICS:
        values = rates[m]
        ok = np.isfinite(values)
        if not ok.any() or p + n == 0:
            out.update({f"{m}_random": math.nan, f"{m}_random_low": math.nan, f"{m}_random_high": math.nan})
            continue
        v, w = values[ok], probs[ok] / probs[ok].sum()
        order = np.argsort(v, kind="stable")
        v, cdf = v[order], np.cumsum(w[order])
        out[f"{m}_random"] = float(np.dot(v, w[order]))
        out[f"{m}_random_low"] = float(v[min(np.searchsorted(cdf, tail - 1e-12), len(v) - 1)])
        out[f"{m}_random_high"] = float(v[min(np.searchsorted(cdf, 1 - tail - 1e-12), len(v) - 1)])
    return out


def random_mean_interval(mixes: Sequence[tuple[int, int]], *, n_draws: int, seed: int, level: float = 0.95,
                         metric: str = "balanced_accuracy") -> tuple[float, float]:
    """The central ``level`` interval of the MEAN of ``metric`` over units answered by fair coin flips, each unit
    with its own (positives, negatives) mix: what a table cell (a mean over neurons) reaches by chance. Seeded
    draws (``n_draws``), so the same mixes give the same interval."""
    if not mixes:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    p = np.array([m[0] for m in mixes])
    n = np.array([m[1] for m in mixes])
    tp = rng.binomial(p, 0.5, size=(n_draws, len(mixes)))
    tn = rng.binomial(n, 0.5, size=(n_draws, len(mixes)))
    values = _rates(tp, n - tn, tn, p - tp)[metric]
    means = np.nanmean(values, axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
