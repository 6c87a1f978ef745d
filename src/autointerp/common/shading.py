"""How activations are shown as shaded tokens, shared by the rating app and the report pages: one scale, so a
rater and a reader see the same shade for the same value."""

from __future__ import annotations

import math

LEVELS = 10  # shades a1..a10
STRONG_LEVEL = 5  # from half the maximum on, a token is bold + underlined with its value shown (readable without colour)


def shade_level(value: float | None, max_value: float) -> int:
    """0..LEVELS: ``value`` as a share of ``max_value`` (the neuron's maximum); 0 for non-positive, NaN or None."""
    if value is None or not max_value > 0 or not math.isfinite(value) or value <= 0:
        return 0
    return min(LEVELS, int(LEVELS * value / max_value))


def visible_token(token: str) -> str:
    """A token as shown in a shaded excerpt: line breaks and tabs as visible marks (the excerpt keeps one line)."""
    return token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")
