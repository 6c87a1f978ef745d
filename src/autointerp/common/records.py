"""The data model shared by every stage: activation records and neuron ids.

Mirrors the reference's ``ActivationRecord`` / ``NeuronId`` (explainer_anchors §1.1) so that prompt
renderers and the simulator can be checked against the reference byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class NeuronId:
    layer: int
    neuron: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.neuron}"


@dataclass
class ActivationRecord:
    """One text excerpt: token strings (leading spaces kept) and the neuron's raw activations."""

    tokens: list[str]
    activations: list[float]
    excerpt_id: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.activations):
            raise ValueError(
                f"ActivationRecord has {len(self.tokens)} tokens but {len(self.activations)} activations"
            )
