"""Activation arithmetic shared by every prompt format (explainer_anchors §2.1, §2.2, §3.1)."""

from __future__ import annotations

import math
import string
from typing import Sequence

from autointerp.common.records import ActivationRecord


def relu(x: float) -> float:
    return max(0.0, x)


def max_activation(records: Sequence[ActivationRecord]) -> float:
    """Max of relu(activation) over all tokens; 0.0 for no tokens (the reference would crash there)."""
    return max((relu(x) for record in records for x in record.activations), default=0.0)


def normalize_activations(activations: Sequence[float], max_a: float) -> list[int]:
    """Integers 0..10: ``min(10, floor(10 * relu(x) / max_a))``, all 0 when ``max_a <= 0``.

    The expression order (10 * x, then / max) is the reference's, so float rounding matches it exactly.
    """
    if max_a <= 0:
        return [0 for _ in activations]
    return [min(10, math.floor(10 * relu(x) / max_a)) for x in activations]


def non_zero_proportion(normalized: Sequence[Sequence[int]]) -> float:
    """Fraction of shown tokens with a non-zero normalised value (0.0 when nothing is shown)."""
    total = sum(len(values) for values in normalized)
    if total == 0:
        return 0.0
    return sum(1 for values in normalized for v in values if v != 0) / total


def excerpt_label(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, 27 -> AB, ... (the reference's ALPHABET[i] raises past Z)."""
    if index < 0:
        raise ValueError(f"excerpt index must be >= 0, got {index}")
    letters = string.ascii_uppercase
    label = ""
    index += 1  # bijective base-26: there is no zero digit
    while index:
        index, rem = divmod(index - 1, 26)
        label = letters[rem] + label
    return label


def format_token_values(
    records: Sequence[ActivationRecord], normalized: Sequence[Sequence[int]], *, omit_zeros: bool = False
) -> str:
    """The reference's ``format_activation_records``: ``token<TAB>value`` lines inside <start>/<end>."""
    blocks = []
    for record, values in zip(records, normalized):
        pairs = zip(record.tokens, values)
        blocks.append("\n".join(f"{token}\t{value}" for token, value in pairs if not omit_zeros or value > 0))
    return "\n<start>\n" + "\n<end>\n<start>\n".join(blocks) + "\n<end>\n"
