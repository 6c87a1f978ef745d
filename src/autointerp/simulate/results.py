"""``SequenceSimulation``: one simulated sequence, with per-token flags so failures are counted, not hidden."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autointerp.simulate.parsing import FLAGS, NO_DIGIT, OK, UNALIGNED


@dataclass
class SequenceSimulation:
    """Per subject token: expected value (0..10 scale; NaN where unaligned), digit distribution and a flag.

    Flags: ``ok`` (EV from the digit alternatives), ``no_digit`` (no digit among the alternatives: EV 0, the
    reference's rule), ``unaligned`` (no prediction could be located: EV NaN, excluded from scores).
    ``n_merged``: ok positions read from a token that starts at the TAB. ``n_extra_lines``: chat lines that
    matched no subject token.
    """

    tokens: list[str]
    expected_values: list[float]
    distributions: list[dict[int, float]]
    flags: list[str]
    mode: str = "prompt_logprobs"
    n_merged: int = 0
    n_extra_lines: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. cache_key, finish_reason

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if not (len(self.expected_values) == len(self.distributions) == len(self.flags) == n):
            raise ValueError("SequenceSimulation fields differ in length")
        if bad := set(self.flags) - set(FLAGS):
            raise ValueError(f"unknown flags {sorted(bad)}; known: {FLAGS}")

    @property
    def n_ok(self) -> int:
        return self.flags.count(OK)

    @property
    def n_no_digit(self) -> int:
        return self.flags.count(NO_DIGIT)

    @property
    def n_unaligned(self) -> int:
        return self.flags.count(UNALIGNED)

    @property
    def counts(self) -> dict[str, int]:
        return {"n_tokens": len(self.tokens), "n_ok": self.n_ok, "n_no_digit": self.n_no_digit,
                "n_unaligned": self.n_unaligned, "n_merged": self.n_merged, "n_extra_lines": self.n_extra_lines}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: NaN EVs become None, distribution keys become strings."""
        return {
            "tokens": list(self.tokens),
            "expected_values": [None if math.isnan(v) else float(v) for v in self.expected_values],
            "distributions": [{str(k): float(p) for k, p in d.items()} for d in self.distributions],
            "flags": list(self.flags),
            "mode": self.mode,
            "n_merged": self.n_merged,
            "n_extra_lines": self.n_extra_lines,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SequenceSimulation":
        return cls(
            tokens=list(d["tokens"]),
            expected_values=[math.nan if v is None else float(v) for v in d["expected_values"]],
            distributions=[{int(k): float(p) for k, p in dist.items()} for dist in d["distributions"]],
            flags=list(d["flags"]),
            mode=d.get("mode", "prompt_logprobs"),
            n_merged=int(d.get("n_merged", 0)),
            n_extra_lines=int(d.get("n_extra_lines", 0)),
            meta=dict(d.get("meta") or {}),
        )
