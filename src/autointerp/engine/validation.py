"""Request parameter checks for the engine's entry points (no torch: the embedder and server import this cheaply).

Every check raises ``EngineError`` naming the offending parameter, which the HTTP server answers with a 400.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any, Mapping

MAX_TOP_LOGPROBS = 100


class EngineError(ValueError):
    """A request the engine cannot serve as asked (bad parameter, prompt too long). The HTTP server answers 400."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def check_float(value: Any, name: str, lo: float, hi: float, *, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EngineError(f"{name} must be a number", name)
    if not lo <= value <= hi:
        raise EngineError(f"{name} must be between {lo} and {hi}", name)
    return float(value)


def check_top(value: Any, name: str, *, allow_zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"{name} must be an integer", name)
    if value < (0 if allow_zero else 1) or value > MAX_TOP_LOGPROBS:
        raise EngineError(f"{name} must be between {0 if allow_zero else 1} and {MAX_TOP_LOGPROBS}", name)
    return int(value)


def check_stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise EngineError("stop must be a string or a list of at most 4 strings", "stop")
    return [s for s in stop if s]


def check_max_tokens(value: Any, room: int) -> int:
    """The number of tokens to generate: ``value`` capped at ``room`` (what the context has left); None: ``room``."""
    if value is None:
        return room
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EngineError("max_tokens must be a non-negative integer", "max_tokens")
    return min(int(value), room)


def check_seed(seed: Any) -> int | None:
    # numpy integers are accepted too (Integral); a bool is an Integral but almost surely a mistake
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise EngineError("seed must be an integer", "seed")
    return int(seed)


def normalise_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI chat messages -> [{"role", "content"}] with text content only ("developer" read as "system")."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise EngineError("messages must be a non-empty list", "messages")
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise EngineError("each message needs a string 'role'", "messages")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):  # content parts: only text is supported
            parts = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise EngineError("only text content parts are supported", "messages")
                parts.append(part["text"])
            content = "".join(parts)
        elif not isinstance(content, str):
            raise EngineError("message content must be a string or a list of text parts", "messages")
        role = m["role"]
        if role == "developer":
            role = "system"
        out.append({"role": role, "content": content})
    return out
