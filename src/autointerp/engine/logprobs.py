"""Prompt logprobs (legacy ``/v1/completions`` with ``echo=True, max_tokens=0, logprobs=N``) and number-aware mode.

``prompt_logprobs`` returns the prompt's tokens, their character offsets, each token's logprob given its prefix,
and the top-N alternatives AT each position (OpenAI's convention: ``top_logprobs[i]`` is the distribution the model
predicted for token i from tokens < i; entry 0 is None unless a hidden BOS precedes it).

Number-aware prompt logprobs (opt-in; ``prompt_logprobs(..., merge_digit_numbers=True)``, or
``LocalEngine(number_aware_logprobs=True)`` to make it the default, which the HTTP server then follows). The
simulator of Bills et al. (2023) reads the top-N alternatives after each ``token<TAB>`` and takes the expected
value over the ones spelled exactly "0".."10". SmolLM2's tokenizer splits numbers into single digits, so "10" is
never a token: its mass hides inside "1" (a "0" would follow) and a predicted 10 reads as a 1. In this mode, at
every returned position whose top-N holds the single-digit token "1", the engine also scores "1" followed by one
more token: with q0 = P("0" | prefix + "1") and pd = P(any of "0".."9" | prefix + "1"),

    "10" <- log(P("1") * q0)          "1" <- log(P("1") * (1 - pd))   ("1" as a complete number)

(the mass of 11-19, off the 0-10 scale, leaves "1", as the simulator's renormalisation would drop it anyway); the
entries are then re-sorted and cut to N, so "10" can push out the N-th. ``token_logprobs``, ``tokens`` and
``top_token_ids`` stay the model's own (raw token ids; "10" has none), and ``PromptLogprobs.digit_merged`` lists
the positions changed. ``LocalEngine(number_aware_after="\\t")`` limits the mode to positions right after a token
ending with that text (the simulator reads values after a TAB only; SmolLM2 ranks "1" in its top-15 at most
positions, so this saves most of the extra work).

Cost: ONE extra batched forward (in chunks of ``DIGIT_CHUNK`` queries) for all such positions, not one per
position: each query is the token "1" at position p+1 (``position_ids``) attending, through a 4D additive mask over
[prompt KV | the new queries], to the prompt's keys/values 0..p (already in the KV cache from the main pass) and
to itself; its new KV is dropped afterwards. Verified against running prefix + "1" through the model separately
(tests, 1e-4; ~2e-5 on SmolLM2-135M). The per-position (q0, 1 - pd) are kept in the prefix cache like the top-K.
The extra pass costs about one query token of prefill per affected position; SmolLM2 ranks "1" in its top-15 at
829 of a 1,301-token simulator prompt's positions (274 of them after a TAB): measured 3.5 -> 6.3 s uncached and
0.9 -> 1.6 s with the shared prefix cached (1 thread, load average ~4.5 on 2 cores). Passing ``positions`` limits
the extra work to those positions. Tokenizers that do not spell "0".."9" as single tokens, or that have a "10"
token of their own, get no change (nothing is hidden, or nothing can be done).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from autointerp.engine.kvcache import Rows
from autointerp.engine.results import PromptLogprobs, finite
from autointerp.engine.tokens import TokenTable, char_offsets
from autointerp.engine.validation import EngineError, check_top

if TYPE_CHECKING:
    from autointerp.engine.engine import LocalEngine

DIGIT_CHUNK = 128  # "1"-continuation queries per extra forward (read at call time: tests shrink it)


def detect_digits(table: TokenTable, tokenize: Any) -> list[int] | None:
    """Ids of the tokens spelled exactly "0".."9" (index = digit), or None when the number-aware mode does not
    apply: a digit has no single-token spelling, or some token is spelled "10" (then "10" is not hidden)."""
    strings = table.strings
    if "10" in strings:
        return None
    by_digit: dict[str, list[int]] = {str(d): [] for d in range(10)}
    for i, s in enumerate(strings):
        if s in by_digit and i not in table.special:
            by_digit[s].append(i)
    ids: list[int] = []
    for d in range(10):
        cands = by_digit[str(d)]
        if not cands:
            return None
        enc = tokenize(str(d))  # the id the tokenizer itself produces, when several tokens spell the digit
        ids.append(enc[0] if len(enc) == 1 and enc[0] in cands else cands[0])
    return ids


def digit_rows(engine: LocalEngine, ids: Sequence[int], needed: torch.Tensor, rows: Rows, top_n: int) -> torch.Tensor:
    """Rows that need the "1"-continuation: needed, "1" in their top-``top_n``, not known yet (prefix cache), and,
    with ``number_aware_after``, right after a token ending with that text."""
    one = engine._digit_ids[1]
    todo = needed & rows.have & (rows.top_ids[:, :top_n] == one).any(dim=1) & torch.isnan(rows.dig[:, 0])
    after = engine.number_aware_after
    if after:
        strings = engine.table.strings
        todo &= torch.tensor([t < len(strings) and strings[t].endswith(after) for t in ids], dtype=torch.bool)
    return torch.nonzero(todo).flatten()


def digit_pass(engine: LocalEngine, cache: Any, n: int, todo_rows: torch.Tensor, rows: Rows) -> None:
    """For each row r in ``todo_rows``, the distribution after ids[:r+1] + "1".

    All rows in one batched forward per chunk (no per-position passes): query j is the token "1" at position
    r_j + 1, and a 4D additive mask (1, 1, m, n + m) over [the prompt's n cached keys | the m new queries]
    lets it see keys 0..r_j and itself only. Each chunk's new keys/values are dropped from the cache after it.
    Fills rows.dig[r] = [log P("0" | ..1), log P(no digit | ..1)] (the latter a logsumexp over the non-digit
    tokens, exact even when the digits take nearly all the mass).
    """
    digit_ids = torch.tensor(engine._digit_ids, dtype=torch.int64)
    one, zero = engine._digit_ids[1], engine._digit_ids[0]
    dtype = engine._lm_head.weight.dtype
    neg = torch.finfo(dtype).min
    key_pos = torch.arange(n)
    for s in range(0, int(todo_rows.numel()), DIGIT_CHUNK):
        sel = todo_rows[s : s + DIGIT_CHUNK]
        m = int(sel.numel())
        mask = torch.full((m, n + m), neg, dtype=dtype)
        mask[:, :n].masked_fill_(key_pos.unsqueeze(0) <= sel.unsqueeze(1), 0.0)
        mask[:, n:].fill_diagonal_(0.0)
        out = engine._base(
            input_ids=torch.full((1, m), one, dtype=torch.int64), position_ids=(sel + 1).unsqueeze(0),
            attention_mask=mask[None, None], past_key_values=cache, use_cache=True,
        )
        for layer in cache.layers:
            layer.truncate(n)
        lsm = torch.log_softmax(engine._logits(out.last_hidden_state[0]), dim=-1)
        rows.dig[sel, 0] = lsm[:, zero]
        lsm[:, digit_ids] = float("-inf")
        rows.dig[sel, 1] = torch.logsumexp(lsm, dim=-1)


def merge_ten(top: dict[str, float], lp_one: float, lq0: float, lnodigit: float, k: int) -> dict[str, float]:
    """Number-aware top-N: "10" <- P("1")·P("0" | ..1), "1" <- P("1")·P(no digit | ..1); re-sorted, cut to k."""
    out = dict(top)  # no "10" in it: the mode is off for vocabularies with a "10" token (detect_digits)
    out["10"] = finite(lp_one + lq0)
    out["1"] = finite(lp_one + lnodigit)
    ranked = sorted(out.items(), key=lambda kv: -math.inf if kv[1] is None else kv[1], reverse=True)
    return dict(ranked[:k])


def positions_near(strings: Sequence[str], text_ids: Sequence[int], near: str) -> list[int]:
    """Indices of the tokens that follow a token ending with ``near``, or that begin with it and go on (a merged
    "\t5": the value is read from that row, as the simulator's parser does)."""
    out = []
    for i, t in enumerate(text_ids):
        prev = strings[text_ids[i - 1]] if i > 0 and text_ids[i - 1] < len(strings) else ""
        here = strings[t] if t < len(strings) else ""
        if prev.endswith(near) or (here.startswith(near) and len(here) > len(near)):
            out.append(i)
    return out


def prompt_logprobs(engine: LocalEngine, prompt: str, top_logprobs: int, positions: Iterable[int] | None,
                    merge_digit_numbers: bool | None, near: str | None = None) -> PromptLogprobs:
    """``LocalEngine.prompt_logprobs`` (documented there)."""
    k = check_top(top_logprobs, "top_logprobs", allow_zero=True)
    if merge_digit_numbers is None:
        merge_digit_numbers = engine.number_aware_logprobs
    elif not isinstance(merge_digit_numbers, bool):
        raise EngineError("merge_digit_numbers must be a boolean", "merge_digit_numbers")
    merge = merge_digit_numbers and k > 0 and engine._digit_ids is not None
    text_ids = engine.tokenize(prompt)
    n_text = len(text_ids)
    b = len(engine._bos_prefix)
    ids = engine._bos_prefix + text_ids
    if n_text == 0:
        return PromptLogprobs([], [], [], [], [], [], True, [] if merge_digit_numbers else None)
    engine._check_length(len(ids))
    wanted = range(n_text) if positions is None else sorted({int(p) for p in positions if 0 <= int(p) < n_text})
    if near:
        wanted = sorted(set(wanted) & set(positions_near(engine.table.strings, text_ids, near)))
    needed_rows = sorted({i + b - 1 for i in wanted if i + b - 1 >= 0})  # row r predicts token r + 1
    with engine._lock:
        rows, _, _ = engine._forward(ids, needed_rows, max(k, 1), want_last=False, keep=True, digits=k if merge else 0)
    table = engine.table
    raw = [table.raw[i] if i < len(table.raw) else b"" for i in text_ids]
    tokens = [table.strings[i] for i in text_ids]
    offsets = char_offsets(prompt, raw)
    exact = offsets is not None and "".join(tokens) == prompt
    if offsets is None:  # normalising tokenizer: fall back to its own offsets and slices
        with engine._tok_lock:
            enc = engine.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [int(s) for s, _ in enc["offset_mapping"]]
        tokens = [prompt[s:e] for s, e in enc["offset_mapping"]]
        exact = "".join(tokens) == prompt
    token_lps: list[float | None] = [None] * n_text
    tops: list[dict[str, float] | None] = [None] * n_text
    top_ids: list[list[int] | None] = [None] * n_text
    have = rows.have.tolist()
    if k > 0:
        all_ids = rows.top_ids[:, :k].tolist()
        all_lps = rows.top_lps[:, :k].tolist()
    next_lp = rows.next_lp.tolist()
    merged: list[int] | None = [] if merge_digit_numbers else None
    if merge:
        one = engine._digit_ids[1]
        dig = rows.dig.tolist()
    for i in wanted:
        r = i + b - 1
        if r < 0 or not have[r]:
            continue
        token_lps[i] = finite(next_lp[r])
        if k > 0:
            top_ids[i] = all_ids[r]
            tops[i] = engine.top_dict(all_ids[r], all_lps[r])
            if merge and one in all_ids[r] and not math.isnan(dig[r][0]):
                tops[i] = merge_ten(tops[i], all_lps[r][all_ids[r].index(one)], dig[r][0], dig[r][1], k)
                merged.append(i)
        else:
            top_ids[i], tops[i] = [], {}
    return PromptLogprobs(tokens, offsets, token_lps, tops, text_ids, top_ids, exact, merged)
