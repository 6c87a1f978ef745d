"""Explainer prompt formats: Original (Bills et al. 2023) and Summary, Highlight, HighlightSummary, AVHS
(Lee et al. 2023), rendered byte for byte as the reference code does (explainer_anchors §2, §3).

Public API::

    FORMATS: dict[str, PromptFormat]          # "Original", "Summary", "Highlight", "HighlightSummary", "AVHS"
    get_format(name) -> PromptFormat           # ValueError listing the known names
    render(fmt, records, *, cutoff=None, few_shot=None, system_message=None, max_excerpts=None,
           mutate_like_seed=False, seed_state=None, context_limit=4097, max_completion_tokens=60,
           context_check="chat", encoding="cl100k_base") -> RenderedPrompt
    RenderedPrompt: format_name, messages, text, prompt_tokens, context_tokens,
                    omitted_few_shot_records, cutoff; .to_json_dict(neuron_id, format_name=None),
                    .to_json_line(neuron_id, format_name=None)
    prompt_hash(rendered) -> str               # sha256 of the canonical JSON of the messages

Variants are a base format plus overrides::

    fmt = variant_from_config({"base": "Summary", "system_message": "...", "max_excerpts": 3})
    fmt(records, cutoff=0.5)                   # a PromptFormat is callable like render
    register_format(fmt)                       # optional: make it reachable by name
    register_renderer("mine", fn)              # fn(Block) -> text after "Activations:"
    register_format(PromptFormat("Mine", "system text", "mine"))

Selection rules: Summary/Highlight/HighlightSummary mark tokens with raw activation > cutoff (1.0 for
the few-shot examples, the caller's cutoff for the target); AVHS marks tokens whose normalised value
(``min(10, floor(10*relu(x)/max))``) is > 0. The target is always "Neuron {len(few-shot)+1}" (4 with
the ORIGINAL examples). Nothing passed in is modified unless ``mutate_like_seed=True`` (SEED's AVHS
bug, explainer_anchors §8.2; the shared examples then live in a ``SeedMutationState``).
"""

from autointerp.prompts.formats.few_shot import (
    FEW_SHOT_SETS,
    SEED_STATE,
    FewShotExample,
    SeedMutationState,
    load_few_shot_set,
)
from autointerp.prompts.formats.records import excerpt_label, max_activation, normalize_activations
from autointerp.prompts.formats.registry import (
    FORMATS,
    PAPER_FORMATS,
    PromptFormat,
    get_format,
    register_format,
    variant_from_config,
)
from autointerp.prompts.formats.render import (
    EXPLANATION_PREFIX,
    FOUR_K_CONTEXT,
    TWO_K_CONTEXT,
    RenderedPrompt,
    canonical_json,
    prompt_hash,
    render,
)
from autointerp.prompts.formats.renderers import RENDERERS, Block, register_renderer

__all__ = [
    "Block",
    "EXPLANATION_PREFIX",
    "FEW_SHOT_SETS",
    "FORMATS",
    "FOUR_K_CONTEXT",
    "FewShotExample",
    "PAPER_FORMATS",
    "PromptFormat",
    "RENDERERS",
    "RenderedPrompt",
    "SEED_STATE",
    "SeedMutationState",
    "TWO_K_CONTEXT",
    "canonical_json",
    "excerpt_label",
    "get_format",
    "load_few_shot_set",
    "max_activation",
    "normalize_activations",
    "prompt_hash",
    "register_format",
    "register_renderer",
    "render",
    "variant_from_config",
]
