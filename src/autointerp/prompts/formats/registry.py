"""The format registry: the five paper formats and cheap variants of them (explainer_anchors §2, §3)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from autointerp.prompts.formats.few_shot import FEW_SHOT_SETS
from autointerp.prompts.formats.renderers import RENDERERS

if TYPE_CHECKING:
    from autointerp.prompts.formats.render import RenderedPrompt

ORIGINAL_SYSTEM_MESSAGE = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
    "document. Look at the parts of the document the neuron activates for and summarize in a single sentence "
    "what the neuron is looking for. Don't list examples of words.\n\nThe activation format is "
    "token<tab>activation. Activation values range from 0 to 10. A neuron finding what it's looking for is "
    "represented by a non-zero activation value. The higher the activation value, the stronger the match."
)
# First paragraph shared by the four Lee et al. formats; only the second paragraph differs.
_NEW_INTRO = (
    "We're studying neurons in a neural network, trying to identify their roles. Look at the parts/tokens of "
    "the document the neuron activates highly for and summarize in a single sentence what the neuron is "
    "looking for. Don't list examples of words.\n\n"
)
_TASK = "Your task is to summarize what the highly activating tokens have in common, taking their context into account."
_BRACKETS = "where each highly activating token(part of word) is highlighted using square brackets, i.e. [token]"
SUMMARY_SYSTEM_MESSAGE = (
    _NEW_INTRO + "We will show short text excerpts, followed by a comma separated list of tokens(part of word) "
    "that activate highly in those text excerpts. " + _TASK
)
HIGHLIGHT_SYSTEM_MESSAGE = _NEW_INTRO + f"We will show short text excerpts, {_BRACKETS}. " + _TASK
HIGHLIGHT_SUMMARY_SYSTEM_MESSAGE = (
    _NEW_INTRO + f"We will show short text excerpts, {_BRACKETS}. This is followed by a comma separated list of "
    "only the highly activating tokens. " + _TASK
)
AVHS_SYSTEM_MESSAGE = (
    _NEW_INTRO + f"We will show short text excerpts, {_BRACKETS}, followed by a comma separated list of "
    "tokens(part of word) and activation value pairs that activate highly in those text excerpts. The "
    "activation format is token<tab>activation. Activation values range from 0 to 10. A neuron finding what "
    "it's looking for is represented by a non-zero activation value. The higher the activation value, the "
    "stronger the match. " + _TASK
)

# How a token is chosen as "highly activating" (brackets / lists):
#   raw_gt_cutoff      raw activation > cutoff (Summary, Highlight, HighlightSummary)
#   normalized_nonzero normalised 0..10 value > 0, i.e. x >= max/10 (AVHS)
#   none               nothing selected (Original shows every value instead)
SELECTIONS = ("raw_gt_cutoff", "normalized_nonzero", "none")


@dataclass(frozen=True)
class PromptFormat:
    """Everything that distinguishes one explainer prompt; call it like ``render`` to render.

    ``max_over_all_records``: AVHS normalises few-shot examples by the max over *all* the example's
    records (also ones omitted for context) and the target by the max over all target records it was
    given; Original recomputes the max over the shown records only.
    ``seed_mutates_records``: the format whose reference formatter overwrites records in place (AVHS);
    only acted on with ``mutate_like_seed=True``.
    ``cutoff`` fixes the target cutoff (ignoring the caller's); ``cutoff_fraction_of_max`` derives the
    cutoff of every block, target and few-shot, as that fraction of the block's max activation.
    """

    name: str
    system_message: str
    renderer: str
    selection: str = "raw_gt_cutoff"
    repeat_non_zero: bool = False
    max_over_all_records: bool = False
    seed_mutates_records: bool = False
    few_shot: str = "original"
    few_shot_cutoff: float = 1.0
    max_excerpts: Optional[int] = None
    cutoff: Optional[float] = None
    cutoff_fraction_of_max: Optional[float] = None

    def __post_init__(self) -> None:
        if self.renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {self.renderer!r}; known renderers: {', '.join(RENDERERS)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; known: {', '.join(SELECTIONS)}")
        if self.few_shot not in FEW_SHOT_SETS:
            raise ValueError(f"unknown few-shot set {self.few_shot!r}; known sets: {', '.join(FEW_SHOT_SETS)}")
        if self.cutoff is not None and self.cutoff_fraction_of_max is not None:
            raise ValueError("set at most one of cutoff and cutoff_fraction_of_max")
        if self.max_excerpts is not None and self.max_excerpts < 1:
            raise ValueError(f"max_excerpts must be >= 1, got {self.max_excerpts}")

    @property
    def uses_cutoff(self) -> bool:
        return self.selection == "raw_gt_cutoff"

    def __call__(self, records, **kwargs: Any) -> "RenderedPrompt":
        from autointerp.prompts.formats.render import render  # late import: render imports this module

        return render(self, records, **kwargs)


FORMATS: dict[str, PromptFormat] = {}


def register_format(fmt: PromptFormat, *, replace: bool = False) -> PromptFormat:
    if fmt.name in FORMATS and not replace:
        raise ValueError(f"format {fmt.name!r} is already registered (pass replace=True)")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> PromptFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown prompt format {name!r}; known formats: {', '.join(FORMATS)}") from None


PAPER_FORMATS = ("Original", "Summary", "Highlight", "HighlightSummary", "AVHS")
register_format(
    PromptFormat("Original", ORIGINAL_SYSTEM_MESSAGE, "original", selection="none", repeat_non_zero=True)
)
register_format(PromptFormat("Summary", SUMMARY_SYSTEM_MESSAGE, "summary"))
register_format(PromptFormat("Highlight", HIGHLIGHT_SYSTEM_MESSAGE, "highlight"))
register_format(PromptFormat("HighlightSummary", HIGHLIGHT_SUMMARY_SYSTEM_MESSAGE, "highlight_summary"))
register_format(
    PromptFormat(
        "AVHS",
        AVHS_SYSTEM_MESSAGE,
        "avhs",
        selection="normalized_nonzero",
        max_over_all_records=True,
        seed_mutates_records=True,
    )
)

_VARIANT_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "system_message": (str,),
    "renderer": (str,),
    "selection": (str,),
    "repeat_non_zero": (bool,),
    "few_shot": (str,),
    "few_shot_cutoff": (int, float),
    "max_excerpts": (int, type(None)),
    "cutoff": (int, float, type(None)),
    "cutoff_fraction_of_max": (int, float, type(None)),
}


def variant_from_config(config: dict[str, Any]) -> PromptFormat:
    """Validate ``{"base": "Summary", <field>: <value>, ...}`` and return the variant (not registered).

    Allowed fields: ``name`` plus the overridable PromptFormat fields in ``_VARIANT_TYPES``. Without a
    ``name`` the variant is called ``<base>~<8 hex of the config's sha256>``, stable across runs.
    """
    if not isinstance(config, dict) or "base" not in config:
        raise ValueError("a variant config must be a dict with a 'base' format name")
    base = get_format(config["base"])
    overrides = {k: v for k, v in config.items() if k != "base"}
    unknown = sorted(set(overrides) - set(_VARIANT_TYPES))
    if unknown:
        raise ValueError(f"unknown variant field(s) {unknown}; allowed: base, {', '.join(_VARIANT_TYPES)}")
    for key, value in overrides.items():
        # bool is an int subclass; refuse it where a number is meant.
        if not isinstance(value, _VARIANT_TYPES[key]) or (isinstance(value, bool) and bool not in _VARIANT_TYPES[key]):
            raise ValueError(f"variant field {key!r} has the wrong type: {value!r}")
    if "name" not in overrides:
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
        overrides["name"] = f"{base.name}~{digest[:8]}"
    return dataclasses.replace(base, **overrides)
