"""One neuron's detection or fuzzing score through the LLM layer (cache, retries, ledger): every example of the
neuron in one chat request, answered greedily (temperature 0: a scorer should give its best answer, and the
same config then gives the same answers), parsed strictly (autointerp.classify.core)."""

from __future__ import annotations

from typing import Sequence

from autointerp.classify.core import Example, chance_floors, metrics, parse_answers, render_messages

TOKENS_PER_ANSWER = 6  # "10: 1\n" is 4-5 tokens in common encodings; a little slack for a trailing period


def max_answer_tokens(n_examples: int) -> int:
    return 8 + TOKENS_PER_ANSWER * n_examples


async def score_explanation(client, kind: str, explanation: str, examples: Sequence[Example], *,
                            seed: int = 0) -> dict:
    """Metrics, chance floors, the answers and usage of one explanation on one neuron's examples."""
    labels = [e.label for e in examples]
    positive = sum(labels)
    floors = chance_floors(positive, len(labels) - positive)
    if not examples:
        return {**metrics(labels, []), **floors, "answers": [], "raw_answer": "", "prompt_tokens": 0,
                "completion_tokens": 0, "requests": 0}
    result = await client.chat(render_messages(kind, explanation, examples), temperature=0.0, top_p=1.0,
                               max_tokens=max_answer_tokens(len(examples)), seed=seed)
    answers = parse_answers(result.text, len(examples))
    return {**metrics(labels, answers), **floors, "answers": answers, "raw_answer": result.text,
            "prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens,
            "requests": 1}
