"""What the engine returns: prompt logprobs (legacy echo shape) and generations (OpenAI chat logprobs shape)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def finite(x: float) -> float:
    """A JSON-safe logprob: NaN (not computed) -> None, -inf -> -9999.0 (JSON has no infinities)."""
    if math.isnan(x):
        return None  # type: ignore[return-value]
    if math.isinf(x):
        return -9999.0
    return float(x)


@dataclass
class PromptLogprobs:
    """Legacy echo logprobs of a prompt. Lists are per prompt token; entries not computed are None."""

    tokens: list[str]
    text_offset: list[int]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    token_ids: list[int]
    top_token_ids: list[list[int] | None]
    exact: bool  # ''.join(tokens) == prompt (False when a character is split across tokens: "bytes:" entries)
    # number-aware mode: token indices whose top_logprobs got the merged "10" / complete-"1" entries (None: off)
    digit_merged: list[int] | None = None

    def legacy(self) -> dict[str, Any]:
        """The ``choices[0].logprobs`` object of a legacy completions response."""
        return {
            "tokens": list(self.tokens),
            "token_logprobs": list(self.token_logprobs),
            "top_logprobs": list(self.top_logprobs),
            "text_offset": list(self.text_offset),
        }


@dataclass
class GeneratedToken:
    id: int
    token: str
    bytes: bytes
    logprob: float
    top: list[tuple[int, str, bytes, float]] = field(default_factory=list)  # (id, token, bytes, logprob), best first

    def chat_entry(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.bytes),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for _, t, b, lp in self.top],
        }


@dataclass
class Generation:
    """A sampled continuation. ``logprobs`` (OpenAI chat shape) is None unless logprobs were requested.

    ``seed``: the seed the sampler was seeded with (the request's, or the fresh one drawn when it had none);
    sending it back reproduces the generation.
    """

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int]
    generated: list[GeneratedToken] | None = None
    text_offset: list[int] | None = None  # per generated token, character offset into ``text``
    seed: int | None = None

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    @property
    def logprobs(self) -> dict[str, Any] | None:
        if self.generated is None:
            return None
        return {"content": [g.chat_entry() for g in self.generated], "refusal": None}
