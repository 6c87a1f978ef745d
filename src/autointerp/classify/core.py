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


def excerpt_text(example: Example) -> str:
    marks = set(example.marks)
    return "".join(f"{MARK_OPEN}{t}{MARK_CLOSE}" if i in marks else t for i, t in enumerate(example.tokens))


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


def metrics(labels: Sequence[bool], answers: Sequence[bool | None]) -> dict:
    """Accuracy, balanced accuracy, precision, recall, F1 and counts; an unparseable answer is a wrong one."""
    tp = sum(bool(a) and l for l, a in zip(labels, answers) if a is not None)
    fp = sum(bool(a) and not l for l, a in zip(labels, answers) if a is not None)
    tn = sum((a is False) and not l for l, a in zip(labels, answers))
    fn = sum((a is False) and l for l, a in zip(labels, answers))
    pos, neg = sum(labels), len(labels) - sum(labels)
    recall = tp / pos if pos else math.nan
    specificity = tn / neg if neg else math.nan
    precision = tp / (tp + fp) if tp + fp else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if pos else math.nan)
    return {"n_examples": len(labels), "n_positive": pos, "n_unparseable": sum(a is None for a in answers),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": (tp + tn) / len(labels) if labels else math.nan,
            "balanced_accuracy": float(np.nanmean([recall, specificity])) if pos or neg else math.nan,
            "precision": precision, "recall": recall, "f1": f1}


def chance_floors(n_positive: int, n_negative: int, level: float = 0.95) -> dict:
    """What answering without reading scores on this example mix: always yes, always no, and fair coin flips
    (the mean balanced accuracy, 0.5, and its central ``level`` interval, from the exact distribution of
    (X/P + Y/N)/2 with X ~ Bin(P, 1/2), Y ~ Bin(N, 1/2))."""
    from scipy.stats import binom

    total = n_positive + n_negative
    out = {"always_yes_accuracy": n_positive / total if total else math.nan,
           "always_no_accuracy": n_negative / total if total else math.nan,
           "always_yes_balanced_accuracy": 0.5 if n_positive and n_negative else math.nan,
           "always_no_balanced_accuracy": 0.5 if n_positive and n_negative else math.nan,
           "random_balanced_accuracy": 0.5, "random_low": math.nan, "random_high": math.nan}
    if not (n_positive and n_negative):
        return out
    xs, ys = np.arange(n_positive + 1), np.arange(n_negative + 1)
    px, py = binom.pmf(xs, n_positive, 0.5), binom.pmf(ys, n_negative, 0.5)
    values = ((xs[:, None] / n_positive + ys[None, :] / n_negative) / 2).ravel()
    probs = (px[:, None] * py[None, :]).ravel()
    order = np.argsort(values, kind="stable")
    values, cdf = values[order], np.cumsum(probs[order])
    tail = (1 - level) / 2
    out["random_low"] = float(values[np.searchsorted(cdf, tail - 1e-12)])
    out["random_high"] = float(values[np.searchsorted(cdf, 1 - tail - 1e-12)])
    return out
