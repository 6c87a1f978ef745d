"""Few-shot examples (OpenAI's ``FewShotExampleSet.ORIGINAL`` / ``TEST``) and the AVHS mutation state.

The example data is package data (``data/few_shot_examples.json``, MIT-licensed facts from
openai/automated-interpretability), so nothing outside the package is read at run time.
Every ``load_few_shot_set`` call returns fresh objects: no caller can change another's examples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from autointerp.common.records import ActivationRecord

# Set name -> key in the JSON file; "none" renders no few-shot examples (target becomes Neuron 1).
FEW_SHOT_SETS = {"original": "ORIGINAL_EXAMPLES", "test": "TEST_EXAMPLES", "none": None}


@dataclass
class FewShotExample:
    explanation: str
    activation_records: list[ActivationRecord]
    first_revealed_activation_indices: list[int] = field(default_factory=list)  # simulator only


@lru_cache(maxsize=1)
def _raw_data() -> dict:
    text = resources.files(__package__).joinpath("data", "few_shot_examples.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_few_shot_set(name: str) -> list[FewShotExample]:
    """Fresh copies of a named example set."""
    if name not in FEW_SHOT_SETS:
        raise ValueError(f"unknown few-shot set {name!r}; known sets: {', '.join(FEW_SHOT_SETS)}")
    key = FEW_SHOT_SETS[name]
    if key is None:
        return []
    return [
        FewShotExample(
            explanation=item["explanation"],
            activation_records=[
                ActivationRecord(list(r["tokens"]), [float(a) for a in r["activations"]])
                for r in item["activation_records"]
            ],
            first_revealed_activation_indices=list(item.get("first_revealed_activation_indices") or []),
        )
        for item in _raw_data()[key]
    ]


class SeedMutationState:
    """Stands in for the reference's module-level few-shot lists, which its AVHS formatter overwrites.

    Only used with ``render(..., mutate_like_seed=True)``: the examples handed out here are the same
    objects on every call, so an AVHS render leaves normalised 0..10 values in them and later
    Summary/Highlight/HighlightSummary renders (cutoff 1.0) see those, as in SEED (explainer_anchors §8.2).
    """

    def __init__(self) -> None:
        self._sets: dict[str, list[FewShotExample]] = {}

    def examples(self, name: str) -> list[FewShotExample]:
        if name not in self._sets:
            self._sets[name] = load_few_shot_set(name)
        return self._sets[name]

    def reset(self) -> None:
        """Forget all mutations, like starting a fresh interpreter."""
        self._sets.clear()


# Process-wide default, mirroring the reference's per-process globals.
SEED_STATE = SeedMutationState()
