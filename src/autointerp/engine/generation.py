"""Sampling: temperature / top-p draws from a per-request seeded ``torch.Generator``, stop strings, the decode loop.

Seeds: every request gets its own generator, seeded from the request's ``seed`` (never torch's global RNG, never
state shared between requests), so the same request with the same seed draws the same random numbers in any
engine instance or process, whatever was served before. A request without a seed gets a fresh one from the OS
(``random.SystemRandom``), recorded in ``Generation.seed``. The draws are then the same; the logits they are
compared against are the model's, which the prefix cache reproduces only up to float rounding (~1e-6, see
``kvcache.py``): a draw can flip only if it lands that close to a boundary between two tokens. With
``cache_entries=0`` the output depends on the request alone.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Sequence

import torch

from autointerp.engine.results import GeneratedToken, Generation, finite
from autointerp.engine.validation import EngineError, check_float, check_max_tokens, check_seed, check_stop, check_top

if TYPE_CHECKING:
    from autointerp.engine.engine import LocalEngine


def seeded_generator(seed: int | None) -> tuple[torch.Generator, int]:
    """(a fresh CPU generator seeded from ``seed``, the seed used); no seed: one drawn from the OS."""
    used = seed if seed is not None else random.SystemRandom().randrange(1 << 62)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(used % (1 << 64))  # manual_seed takes 0 <= seed < 2**64; negative seeds wrap
    return gen, used


def sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        # stable: tied probabilities keep vocabulary order, so the kept set never depends on the sort kernel
        sp, si = torch.sort(probs, descending=True, stable=True)
        keep = (torch.cumsum(sp, 0) - sp) < top_p  # smallest set reaching top_p; the top token always stays
        sp, si = sp[keep], si[keep]
        return int(si[torch.multinomial(sp, 1, generator=gen)])
    return int(torch.multinomial(probs, 1, generator=gen))


def first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops]
    hits = [h for h in hits if h >= 0]
    return min(hits) if hits else None


def generate(
    engine: LocalEngine, ids: list[int], temperature: float, top_p: float, max_tokens: int | None, seed: int | None,
    logprobs: bool, top_logprobs: int, stop: str | Sequence[str] | None, ignore_eos: bool = False,
) -> Generation:
    """Check the sampling parameters, then continue ``ids`` under the engine's lock (``LocalEngine.chat``)."""
    temperature = check_float(temperature, "temperature", 0.0, 2.0, default=1.0)
    top_p = check_float(top_p, "top_p", 0.0, 1.0, default=1.0)
    if top_p <= 0.0:
        raise EngineError("top_p must be > 0", "top_p")
    top_k = check_top(top_logprobs or 0, "top_logprobs", allow_zero=True) if logprobs else 0
    stops = check_stop(stop)
    engine._check_length(len(ids))
    limit = check_max_tokens(max_tokens, engine.max_context - len(ids))
    gen, used_seed = seeded_generator(check_seed(seed))
    eos_ids = frozenset() if ignore_eos else frozenset(engine._eos_ids)
    with engine._lock:
        return _decode(engine, ids, temperature, top_p, limit, gen, used_seed, logprobs, top_k, stops, eos_ids)


@torch.inference_mode()
def _decode(
    engine: LocalEngine, ids: list[int], temperature: float, top_p: float, limit: int, gen: torch.Generator,
    seed: int, logprobs: bool, top_k: int, stops: list[str], eos_ids: frozenset[int],
) -> Generation:
    n = len(ids)
    table = engine.table
    out_ids: list[int] = []
    generated: list[GeneratedToken] | None = [] if logprobs else None
    finish = "length"
    if limit <= 0:
        return Generation("", "length", n, 0, [], generated, [] if logprobs else None, seed)
    # buffers start with room for up to 1,024 new tokens and double if a longer answer needs more
    _, cache, logits = engine._forward(ids, [], 1, want_last=True, keep=False, capacity=n + min(limit, 1024))
    fed = list(ids)
    cut: int | None = None
    t_decode = time.perf_counter()
    while True:
        tok = sample(logits, temperature, top_p, gen)
        if generated is not None:
            lsm = torch.log_softmax(logits, dim=-1)
            alts: list[tuple[int, str, bytes, float]] = []
            if top_k > 0:
                v, i = torch.topk(lsm, top_k)
                alts = [(t, table.strings[t], table.raw[t], finite(lp)) for t, lp in zip(i.tolist(), v.tolist())]
            generated.append(GeneratedToken(tok, table.strings[tok], table.raw[tok], finite(float(lsm[tok])), alts))
        if tok in eos_ids:
            finish = "stop"
            if generated is not None:
                generated.pop()  # the end token is not part of the answer
            break
        out_ids.append(tok)
        if stops:
            hit = first_stop(table.text_of(out_ids), stops)
            if hit is not None:
                cut, finish = hit, "stop"
                break
        if len(out_ids) >= limit:
            break
        fed.append(tok)
        engine._stop_if_cancelled(len(out_ids))  # the caller may have gone: stop between steps
        step = engine._base(input_ids=torch.tensor([[tok]]), past_key_values=cache, use_cache=True)
        logits = engine._logits(step.last_hidden_state[0, -1:])[0]
    engine.stats["generated_tokens"] += len(out_ids)
    engine.last_timing["decode_s"] = time.perf_counter() - t_decode
    engine.last_timing["decode_tokens"] = len(out_ids)
    engine.prefix.store(torch.tensor(fed, dtype=torch.int64), cache, None)
    text = table.text_of(out_ids)
    if cut is not None:
        text = text[:cut]
    offsets = None
    if generated is not None:
        offsets, pos = [], 0
        for g in generated:
            offsets.append(min(pos, len(text)))
            pos += len(g.bytes.decode("utf-8", errors="ignore"))
    return Generation(text, finish, n, len(out_ids), out_ids, generated, offsets, seed)
