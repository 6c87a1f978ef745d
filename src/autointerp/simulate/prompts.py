"""Simulator prompts: the reference all-at-once prompt (explainer_anchors §4.1) and the chat-transport prompt.

``build_simulator_prompt`` reproduces ``ExplanationNeuronSimulator``'s INSTRUCTION_FOLLOWING string byte for
byte and returns, for every subject token, the character offset of its ``unknown`` placeholder: the prompt is
built here, so the offsets are exact and alignment never has to guess from the simulator's tokenisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from autointerp.prompts.formats import (
    EXPLANATION_PREFIX,
    FewShotExample,
    load_few_shot_set,
    max_activation,
    normalize_activations,
)
from autointerp.prompts.formats.render import instruction_text

UNKNOWN = "unknown"

# Verbatim, including the single trailing newline (the first user turn then adds "\n\n").
SIMULATOR_SYSTEM_MESSAGE = (
    "We're studying neurons in a neural network.\n"
    "Each neuron looks for some particular thing in a short document.\n"
    "Look at summary of what the neuron does, and try to predict how it will fire on each token.\n"
    "\n"
    'The activation format is token<tab>activation, activations go from 0 to 10, "unknown" indicates an unknown '
    "activation. Most activations will be 0.\n"
)

# Chat transport (not in the reference, which has no working chat simulator; explainer_anchors §8.1, §8.6).
CHAT_SYSTEM_MESSAGE = (
    "We're studying neurons in a neural network.\n"
    "Each neuron looks for some particular thing in a short document.\n"
    "Look at summary of what the neuron does, and try to predict how it will fire on each token.\n"
    "\n"
    "The activation format is token<tab>activation, activations go from 0 to 10. Most activations will be 0.\n"
    "You will be given the explanation of a neuron and a text split into tokens, one token per line. Reply with "
    "exactly one line per token, in the same order: the token exactly as given, a tab, and the predicted "
    "activation as an integer from 0 to 10. Inside tokens, a newline is written \\n, a tab \\t, a carriage return "
    "\\r and a backslash \\\\. Write nothing else."
)


@dataclass(frozen=True)
class SimulatorPrompt:
    """The all-at-once prompt in both forms plus the exact offset of each target ``unknown`` in ``text``."""

    text: str  # INSTRUCTION_FOLLOWING string: what is sent to /v1/completions
    messages: list[dict[str, str]]  # HARMONY-style message list (documentation; chat has no echo)
    tokens: list[str]
    unknown_offsets: list[int]


def _examples(few_shot: str | Sequence[FewShotExample]) -> list[FewShotExample]:
    return load_few_shot_set(few_shot) if isinstance(few_shot, str) else list(few_shot)


def _example_lines(example: FewShotExample, *, hide_before: bool) -> list[list[tuple[str, str]]]:
    """Per record, (token, value string) pairs; ``unknown`` before first_revealed_activation_indices[k]."""
    max_a = max_activation(example.activation_records)
    starts = example.first_revealed_activation_indices if hide_before else []
    out = []
    for k, record in enumerate(example.activation_records):
        start = starts[k] if k < len(starts) else 0
        values = normalize_activations(record.activations, max_a)
        out.append([(tok, UNKNOWN if i < start else str(v)) for i, (tok, v) in enumerate(zip(record.tokens, values))])
    return out


def _block(records: list[list[tuple[str, str]]]) -> str:
    """The reference's ``format_activation_records`` framing: ``\\n<start>\\n…\\n<end>\\n`` per record."""
    bodies = ["\n".join(f"{tok}\t{val}" for tok, val in rec) for rec in records]
    return "\n<start>\n" + "\n<end>\n<start>\n".join(bodies) + "\n<end>\n"


def _header(i: int, explanation: str) -> str:
    return f"\n\nNeuron {i}\nExplanation of neuron {i} behavior: {EXPLANATION_PREFIX} {explanation}"


def build_simulator_prompt(explanation: str, tokens: Sequence[str], *,
                           few_shot: str | Sequence[FewShotExample] = "original") -> SimulatorPrompt:
    """All-at-once simulator prompt (explainer_anchors §4.1) for one sequence of subject token strings.

    Few-shot explanations are inserted as stored; the target explanation is ``.strip()``-ed, as in the reference.
    ``<|endofprompt|>`` ends the last user turn in the IF string.
    """
    tokens = [str(t) for t in tokens]
    examples = _examples(few_shot)
    messages = [{"role": "system", "content": SIMULATOR_SYSTEM_MESSAGE}]
    for i, ex in enumerate(examples, start=1):
        messages.append({"role": "user", "content": _header(i, ex.explanation)})
        messages.append({"role": "assistant",
                         "content": "\nActivations: " + _block(_example_lines(ex, hide_before=True)) + "\n"})
    messages.append({"role": "user", "content": _header(len(examples) + 1, explanation.strip())})
    head = "\nActivations: \n<start>\n"
    messages.append({"role": "assistant",
                     "content": head + "\n".join(f"{t}\t{UNKNOWN}" for t in tokens) + "\n<end>\n"})

    text = instruction_text(messages)  # the last user turn is the one before the final assistant turn
    offsets, pos = [], len(text) - len(messages[-1]["content"]) + len(head)
    for t in tokens:
        pos += len(t) + 1  # the token, then the TAB
        offsets.append(pos)
        pos += len(UNKNOWN) + 1  # "unknown", then the newline
    assert all(text.startswith("\t" + UNKNOWN, u - 1) for u in offsets)
    return SimulatorPrompt(text=text, messages=messages, tokens=tokens, unknown_offsets=offsets)


def escape_token(token: str) -> str:
    """A token as written on one line of the chat transport (backslash, newline, tab, CR escaped)."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _chat_user(i: int, explanation: str, tokens: Sequence[str]) -> str:
    return (f"Neuron {i}\nExplanation of neuron {i} behavior: {EXPLANATION_PREFIX} {explanation}\nTokens:\n"
            + "\n".join(escape_token(t) for t in tokens))


def build_chat_simulation_messages(explanation: str, tokens: Sequence[str], *,
                                   few_shot: str | Sequence[FewShotExample] = "original") -> list[dict[str, str]]:
    """Chat-transport prompt: system, then one user/assistant pair per few-shot record (fully revealed, values
    normalised per example as in the reference), then the target's user turn."""
    messages = [{"role": "system", "content": CHAT_SYSTEM_MESSAGE}]
    examples = _examples(few_shot)
    for i, ex in enumerate(examples, start=1):
        for rec in _example_lines(ex, hide_before=False):
            messages.append({"role": "user", "content": _chat_user(i, ex.explanation.strip(), [t for t, _ in rec])})
            messages.append({"role": "assistant", "content": "\n".join(f"{escape_token(t)}\t{v}" for t, v in rec)})
    messages.append({"role": "user", "content": _chat_user(len(examples) + 1, explanation.strip(), tokens)})
    return messages
