"""Assemble a full explainer prompt: system message, few-shot blocks, target block, context-limit loop.

Mirrors ``TokenActivationPairExplainer.make_explanation_prompt`` and SEED's four copies of it
(explainer_anchors §2.4-2.6, §3.1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from autointerp.common.io import canonical_json
from autointerp.common.records import ActivationRecord, NeuronId
from autointerp.prompts.formats.few_shot import SEED_STATE, FewShotExample, SeedMutationState, load_few_shot_set
from autointerp.prompts.formats.records import format_token_values, max_activation, non_zero_proportion, normalize_activations
from autointerp.prompts.formats.registry import PromptFormat, get_format
from autointerp.prompts.formats.renderers import RENDERERS, Block
from autointerp.prompts.tokens import EncodingLike, count_chat_tokens, count_text_tokens

EXPLANATION_PREFIX = "the main thing this neuron does is find"
END_OF_PROMPT = "<|endofprompt|>"
FOUR_K_CONTEXT = 4097
TWO_K_CONTEXT = 2049  # the reference's ContextSize.TWO_K: 1 record per example, 2 target records, no omission
CONTEXT_CHECKS = ("chat", "text")


@dataclass(frozen=True)
class RenderedPrompt:
    """One rendered prompt in both forms.

    ``messages``: HARMONY_V4 chat list. ``text``: INSTRUCTION_FOLLOWING string (``<|endofprompt|>``
    ends the last user turn, the explanation prefix follows it). ``prompt_tokens``: chat count with
    OpenAI's 3/message + 3 formula. ``context_tokens``: the count the reference's context check used.
    ``cutoff``: the target's raw-activation cutoff actually applied (None when the format ignores it).
    """

    format_name: str
    messages: list[dict[str, str]]
    text: str
    prompt_tokens: int
    context_tokens: int
    omitted_few_shot_records: int
    cutoff: Optional[float]

    def to_json_dict(self, neuron_id: NeuronId, format_name: Optional[str] = None) -> dict[str, Any]:
        return {
            "layer": neuron_id.layer,
            "neuron": neuron_id.neuron,
            "format": format_name or self.format_name,
            "messages": self.messages,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "cutoff": self.cutoff,
            "omitted_few_shot_records": self.omitted_few_shot_records,
            "prompt_hash": prompt_hash(self),
        }

    def to_json_line(self, neuron_id: NeuronId, format_name: Optional[str] = None) -> str:
        """The JSONL line (no trailing newline), byte-stable for equal inputs."""
        return canonical_json(self.to_json_dict(neuron_id, format_name))


def prompt_hash(rendered: RenderedPrompt) -> str:
    """sha256 hex of the canonical JSON of the chat messages."""
    return hashlib.sha256(canonical_json(rendered.messages).encode("utf-8")).hexdigest()


def _block_cutoff(fmt: PromptFormat, records: Sequence[ActivationRecord], default: Optional[float]) -> Optional[float]:
    if not fmt.uses_cutoff:
        return None
    if fmt.cutoff_fraction_of_max is not None:
        return fmt.cutoff_fraction_of_max * max_activation(records)
    return default


def _render_block(
    fmt: PromptFormat, records: Sequence[ActivationRecord], max_a: float, cutoff: Optional[float], mutate: bool
) -> str:
    normalized = [normalize_activations(r.activations, max_a) for r in records]
    if fmt.selection == "raw_gt_cutoff":
        selected = [[a > cutoff for a in r.activations] for r in records]  # strict, raw, no relu
    elif fmt.selection == "normalized_nonzero":
        selected = [[v > 0 for v in values] for values in normalized]
    else:
        selected = [[False] * len(values) for values in normalized]
    body = RENDERERS[fmt.renderer](Block(records, normalized, selected))
    if fmt.repeat_non_zero and non_zero_proportion(normalized) < 0.2:
        body += "\nSame activations, but with all zeros filtered out:" + format_token_values(
            records, normalized, omit_zeros=True
        )
    if mutate and fmt.seed_mutates_records:
        for record, values in zip(records, normalized):
            record.activations = values  # SEED's _AVHS_activation_record bug, reproduced on request only
    return body


def _assemble(
    fmt: PromptFormat,
    system_message: str,
    examples: Sequence[FewShotExample],
    target: Sequence[ActivationRecord],
    target_cutoff: Optional[float],
    omit: int,
    two_k: bool,
    mutate: bool,
) -> tuple[list[dict[str, str]], str, int]:
    chat = [{"role": "system", "content": system_message}]
    instruct = [{"role": "system", "content": system_message}]  # IF: the prefix moves to the assistant turn
    omitted = 0

    def add(n: int, body: str, explanation: Optional[str]) -> None:
        head = f"\n\nNeuron {n}\nActivations:{body}\nExplanation of neuron {n} behavior:"
        chat.append({"role": "user", "content": f"{head} {EXPLANATION_PREFIX}"})
        instruct.append({"role": "user", "content": head})
        if explanation is not None:
            chat.append({"role": "assistant", "content": f" {explanation}."})
            instruct.append({"role": "assistant", "content": f" {EXPLANATION_PREFIX} {explanation}."})
        else:
            instruct.append({"role": "assistant", "content": f" {EXPLANATION_PREFIX}"})

    for i, example in enumerate(examples):
        records = example.activation_records
        if two_k:
            records = records[:1]
        elif omitted < omit and len(records) > 1:  # drop the last record of the next example that has 2+
            records = records[:-1]
            omitted += 1
        max_a = max_activation(example.activation_records if fmt.max_over_all_records else records)
        cutoff = _block_cutoff(fmt, records, fmt.few_shot_cutoff)
        add(i + 1, _render_block(fmt, records, max_a, cutoff, mutate), example.explanation)

    shown = target[:2] if two_k else target
    max_a = max_activation(target if fmt.max_over_all_records else shown)
    add(len(examples) + 1, _render_block(fmt, shown, max_a, target_cutoff, mutate), None)

    return chat, instruction_text(instruct), omitted


def instruction_text(messages: Sequence[dict]) -> str:
    """The reference's INSTRUCTION_FOLLOWING string of a chat: the contents joined, with ``<|endofprompt|>``
    after the last user turn (explainer and simulator prompts both)."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return "".join(m["content"] + (END_OF_PROMPT if i == last_user else "") for i, m in enumerate(messages))


def render(
    fmt: Union[str, PromptFormat],
    records: Sequence[ActivationRecord],
    *,
    cutoff: Optional[float] = None,
    few_shot: Union[str, Sequence[FewShotExample], None] = None,
    system_message: Optional[str] = None,
    max_excerpts: Optional[int] = None,
    mutate_like_seed: bool = False,
    seed_state: Optional[SeedMutationState] = None,
    context_limit: Optional[int] = FOUR_K_CONTEXT,
    max_completion_tokens: int = 60,
    context_check: str = "chat",
    encoding: EncodingLike = "cl100k_base",
) -> RenderedPrompt:
    """Render the explainer prompt of ``fmt`` for a target neuron's ``records``.

    ``cutoff``: the target's raw-activation cutoff (required by cutoff-based formats unless the format
    fixes its own; ignored by Original and AVHS). ``few_shot``/``system_message``/``max_excerpts``
    override the format's. ``mutate_like_seed=True`` reproduces SEED's AVHS in-place overwrite, both
    on ``records`` and on the few-shot examples held by ``seed_state`` (default: the process-wide
    ``SEED_STATE``); otherwise nothing passed in or shared is modified.
    Context limit (reference §2.6): while the check's token count + ``max_completion_tokens`` exceeds
    ``context_limit``, the last record of one more few-shot example is dropped (examples in order, only
    those with 2+ records). ``context_check`` picks the reference count: "chat" (4/message + 2) or "text"
    (the IF string). ``context_limit=None`` disables the check; ``TWO_K_CONTEXT`` reproduces the 2K mode.
    """
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if context_check not in CONTEXT_CHECKS:
        raise ValueError(f"unknown context_check {context_check!r}; known: {', '.join(CONTEXT_CHECKS)}")
    limit = max_excerpts if max_excerpts is not None else fmt.max_excerpts
    if limit is not None and limit < 1:
        raise ValueError(f"max_excerpts must be >= 1, got {limit}")
    target = list(records)[:limit] if limit is not None else list(records)
    if not target:
        raise ValueError("render needs at least one activation record")

    few_shot = fmt.few_shot if few_shot is None else few_shot
    if mutate_like_seed:
        state = seed_state if seed_state is not None else SEED_STATE
        examples = state.examples(few_shot) if isinstance(few_shot, str) else list(few_shot)
    else:
        # Private copies, so neither the caller's records nor any shared examples can change.
        target = [ActivationRecord(list(r.tokens), list(r.activations), r.excerpt_id) for r in target]
        if isinstance(few_shot, str):
            examples = load_few_shot_set(few_shot)
        else:
            examples = [
                FewShotExample(
                    e.explanation,
                    [ActivationRecord(list(r.tokens), list(r.activations)) for r in e.activation_records],
                    list(e.first_revealed_activation_indices),
                )
                for e in few_shot
            ]

    target_cutoff = fmt.cutoff if fmt.cutoff is not None else cutoff
    target_cutoff = _block_cutoff(fmt, target, target_cutoff)
    if fmt.uses_cutoff and target_cutoff is None:
        raise ValueError(f"format {fmt.name!r} selects tokens above a cutoff; pass cutoff=")
    system = fmt.system_message if system_message is None else system_message
    two_k = context_limit == TWO_K_CONTEXT

    omit = 0
    while True:
        messages, text, omitted = _assemble(fmt, system, examples, target, target_cutoff, omit, two_k, mutate_like_seed)
        if context_check == "chat":
            context_tokens = count_chat_tokens(messages, encoding, overhead="reference")
        else:
            context_tokens = count_text_tokens(text, encoding, allow_special=True)
        too_long = context_limit is not None and context_tokens + max_completion_tokens > context_limit
        # Retry only while the last attempt made every omission asked for (the reference's stop rule).
        if too_long and omitted == omit and not two_k:
            omit += 1
            continue
        break

    return RenderedPrompt(
        format_name=fmt.name,
        messages=messages,
        text=text,
        prompt_tokens=count_chat_tokens(messages, encoding, overhead="openai"),
        context_tokens=context_tokens,
        omitted_few_shot_records=omitted,
        cutoff=target_cutoff,
    )
