"""Running the simulator over sequences through an ``LLMClient`` (either transport)."""

from __future__ import annotations

from typing import Sequence

from autointerp.prompts.formats import FewShotExample
from autointerp.llm import LLMClient, run_many
from autointerp.simulate.parsing import align_prompt_logprobs, parse_chat_simulation
from autointerp.simulate.prompts import build_chat_simulation_messages, build_simulator_prompt
from autointerp.simulate.results import SequenceSimulation

MODES = ("prompt_logprobs", "chat_logprobs")
ECHO_TOP_LOGPROBS = 15  # the reference's logprobs=15


def chat_max_tokens(n_tokens: int) -> int:
    """Room for one ``token<TAB>value`` line per subject token (a line is ~3-6 tokens, escapes included)."""
    return 8 * n_tokens + 50


async def simulate_sequence(client: LLMClient, explanation: str, tokens: Sequence[str], *,
                            mode: str = "prompt_logprobs", few_shot: str | Sequence[FewShotExample] = "original",
                            top_logprobs: int = ECHO_TOP_LOGPROBS, seed: int | None = None) -> SequenceSimulation:
    """Simulate one sequence. ``prompt_logprobs``: the reference's echo call on the all-at-once prompt.
    ``chat_logprobs``: the chat transport at temperature 0 (``top_logprobs`` <= 20 for OpenAI)."""
    tokens = [str(t) for t in tokens]
    if mode not in MODES:
        raise ValueError(f"unknown simulation mode {mode!r}; known: {', '.join(MODES)}")
    if not tokens:
        return SequenceSimulation([], [], [], [], mode=mode)
    if mode == "prompt_logprobs":
        prompt = build_simulator_prompt(explanation, tokens, few_shot=few_shot)
        # Values are read at each record token's ``unknown`` or the TAB before it: nothing earlier is kept.
        res = await client.completion_echo_logprobs(prompt.text, top_logprobs=top_logprobs,
                                                    from_offset=max(0, min(prompt.unknown_offsets) - 1))
        parsed = align_prompt_logprobs(prompt, res.tokens, res.text_offsets, res.top_logprobs)
        meta = {"cache_key": res.cache_key}
    else:
        messages = build_chat_simulation_messages(explanation, tokens, few_shot=few_shot)
        res = await client.chat(messages, temperature=0.0, top_p=1.0, max_tokens=chat_max_tokens(len(tokens)),
                                seed=seed, logprobs=True, top_logprobs=top_logprobs)
        if res.logprobs is None:
            raise ValueError(f"{client!r} returned no logprobs; the chat_logprobs transport needs them")
        parsed = parse_chat_simulation(tokens, res.text, res.logprobs)
        meta = {"cache_key": res.cache_key, "finish_reason": res.finish_reason}
    return SequenceSimulation(tokens=tokens, mode=mode, meta=meta, **parsed)


async def simulate_sequences(client: LLMClient, explanation: str, sequences: Sequence[Sequence[str]], *,
                             mode: str = "prompt_logprobs", few_shot: str | Sequence[FewShotExample] = "original",
                             top_logprobs: int = ECHO_TOP_LOGPROBS, seed: int | None = None,
                             concurrency: int = 64) -> list[SequenceSimulation]:
    """Simulate every sequence concurrently (the client's own limits still apply); results in input order.
    A request that failed for good raises here (after the others finished): no sequence is silently dropped."""
    if mode not in MODES:
        raise ValueError(f"unknown simulation mode {mode!r}; known: {', '.join(MODES)}")
    results = await run_many(
        [lambda s=s: simulate_sequence(client, explanation, s, mode=mode, few_shot=few_shot,
                                       top_logprobs=top_logprobs, seed=seed) for s in sequences],
        concurrency=concurrency)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results
