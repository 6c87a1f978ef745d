"""The fitted N2G model of one neuron: its lines, the prediction trie built from them, and predictions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from autointerp.common.records import ActivationRecord
from autointerp.n2g.trie import Line, Trie


def normalise_token(token):
    """Reference orig's normalisation: lower-case a title-cased token, strip a word's whitespace."""
    if token is None:
        return None
    if token.istitle() and len(token) > 1:
        token = token.lower()
    if len(token) > 1 and any(ch.isalpha() for ch in token):
        token = token.strip()
    return token


@dataclass
class N2GModel:
    """Lines (in fitting order), the normaliser ``a_max`` and the config; the trie is rebuilt from the lines,
    so ``to_dict``/``from_dict`` round-trip exactly. Predictions are normalised activations (x ``a_max``
    for activation units)."""

    lines: list
    a_max: float
    config: object = None
    stats: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from autointerp.n2g.fit import N2GConfig

        if self.config is None:
            self.config = N2GConfig()
        elif isinstance(self.config, dict):
            self.config = N2GConfig(**self.config)
        self.trie = Trie.build(self._keyed(self.lines), combine=self.config.combine,
                               activation_threshold=self.config.activation_threshold)

    def _key(self, token):
        return normalise_token(token) if self.config.normalise_tokens else token

    def _keyed(self, lines: Sequence[Line]) -> list[Line]:
        if not self.config.normalise_tokens:
            return list(lines)
        return [Line(tuple(self._key(t) for t in ln.tokens), ln.importances, ln.activations, ln.value)
                for ln in lines]

    def predict(self, tokens: Sequence[str]) -> np.ndarray:
        """Normalised predicted activation of every token of one text (token strings)."""
        return self.trie.predict([self._key(t) for t in tokens])

    def predict_records(self, records: Sequence[ActivationRecord]) -> list[np.ndarray]:
        return [self.predict(r.tokens) for r in records]

    # ------------------------------------------------------------------ rendering (see render.py)
    def to_dot(self, **kw) -> str:
        from autointerp.n2g.render import to_dot

        return to_dot(self, **kw)

    def render_svg(self, path=None, **kw) -> str:
        from autointerp.n2g.render import render_svg

        return render_svg(self.to_dot(**kw), path)

    def describe(self, **kw) -> str:
        from autointerp.n2g.render import describe

        return describe(self, **kw)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"a_max": self.a_max, "config": self.config.to_dict(), "lines": [ln.to_dict() for ln in self.lines],
                "stats": self.stats}

    @classmethod
    def from_dict(cls, d: dict) -> "N2GModel":
        return cls(lines=[Line.from_dict(x) for x in d["lines"]], a_max=float(d["a_max"]), config=d["config"],
                   stats=d.get("stats", {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
