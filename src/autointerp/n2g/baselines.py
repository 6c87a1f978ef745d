"""Baselines of the N2G paper (spec §9): token lookup and n-gram lookup, on normalised activations."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from autointerp.common.records import ActivationRecord


class TokenLookup:
    """Each token string -> the max normalised activation it had anywhere in the training records;
    unseen tokens predict 0."""

    def __init__(self, table: dict[str, float] | None = None):
        self.table = dict(table or {})

    @classmethod
    def fit(cls, records: Sequence[ActivationRecord], a_max: float) -> "TokenLookup":
        table: dict[str, float] = {}
        for r in records:
            for tok, act in zip(r.tokens, r.activations):
                v = float(act) / a_max
                if v > table.get(tok, -np.inf):
                    table[tok] = v
        return cls(table)

    def predict(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self.table.get(t, 0.0) for t in tokens], dtype=float)

    def predict_records(self, records: Sequence[ActivationRecord]) -> list[np.ndarray]:
        return [self.predict(r.tokens) for r in records]


class NGramLookup:
    """The paper's n-gram baseline: the ``n`` tokens ending at a position (fewer at the start of a text)
    -> the max normalised activation of that position, stored only where it is >= ``threshold`` (the
    reference compared the RAW activation, bug 14); everything else predicts 0. The paper used n = 5."""

    def __init__(self, n: int = 5, threshold: float = 0.5):
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n, self.threshold = n, threshold
        self.table: dict[tuple, float] = {}

    def _key(self, tokens: Sequence[str], t: int) -> tuple:
        return tuple(tokens[max(0, t - self.n + 1):t + 1])

    @classmethod
    def fit(cls, records: Sequence[ActivationRecord], a_max: float, n: int = 5,
            threshold: float = 0.5) -> "NGramLookup":
        model = cls(n, threshold)
        for r in records:
            for t, act in enumerate(r.activations):
                v = float(act) / a_max
                if v >= threshold:
                    key = model._key(r.tokens, t)
                    model.table[key] = max(v, model.table.get(key, -np.inf))
        return model

    def predict(self, tokens: Sequence[str]) -> np.ndarray:
        tokens = list(tokens)
        return np.array([self.table.get(self._key(tokens, t), 0.0) for t in range(len(tokens))], dtype=float)

    def predict_records(self, records: Sequence[ActivationRecord]) -> list[np.ndarray]:
        return [self.predict(r.tokens) for r in records]
