"""The workflow stage: rule ``prepare_human_study`` writes a study *template* (blinded items, no raters).

The template is a rule output: a rerun, a changed parameter or ``--forcerun`` may replace it at any time, and
nobody rates it (:func:`store.connect` refuses templates). Ratings live in a rating database outside
``results/`` that ``python -m autointerp.human_eval init --template … --db human_eval/<name>.sqlite`` creates
from it and that no rule writes (docs/human_eval.md).
"""

from __future__ import annotations

from typing import Any, Mapping

from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO
from autointerp.human_eval.store import prepare_study


class HumanEvalSettings(Settings):
    """What a study template depends on: its name and explainer (wildcards) and ``human_eval.seed`` /
    ``human_eval.max_items``. ``human_eval.ratings`` is not here: it feeds Table 5, never the template."""

    study_name: str
    explainer: str
    seed: int
    max_items: int | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], wildcards: Mapping[str, str]) -> "HumanEvalSettings":
        human_eval = config["human_eval"]
        return cls(study_name=f"{wildcards['neuron_set']}-{wildcards['explainer']}", explainer=wildcards["explainer"],
                   seed=human_eval["seed"], max_items=human_eval["max_items"])


def run_prepare_study(settings: HumanEvalSettings, io: RuleIO) -> dict:
    """The template of one explainer's explanations (every format it ran) of one neuron set."""
    explanations = io.input["explanations"]
    return prepare_study(io.input["records"], [explanations] if isinstance(explanations, str) else explanations,
                         io.outputs[0], explainer=settings.explainer, study_name=settings.study_name,
                         seed=settings.seed, max_items=settings.max_items, overwrite=True, template=True)
