"""In-process causal-LM engine (plain transformers on CPU): chat sampling and prompt-token top-N logprobs.

What the explain -> simulate workflow needs from an embedded model, without a server process:

* ``chat``: the chat template, temperature / top_p sampling from a seeded ``torch.Generator`` (never global RNG
  state), greedy at temperature 0, ``max_tokens``, stop strings, and per-token logprobs in OpenAI's chat shape.
* ``prompt_logprobs``: what legacy ``/v1/completions`` returns for ``echo=True, max_tokens=0, logprobs=N``: the
  prompt's tokens, their character offsets, each token's logprob given its prefix, and the top-N alternatives AT
  each position (OpenAI's convention: ``top_logprobs[i]`` is the distribution the model predicted for token i
  from tokens < i; entry 0 is None because nothing precedes it).
* ``complete``: raw-prompt generation (legacy completions without echo).

Prefix KV caching: a small LRU of past requests' key/value tensors, keyed by their token ids. A request reuses
the longest common prefix with any stored entry and only runs the model over the rest. For ``prompt_logprobs``
the entry also stores, per position, the top-K logprobs it computed, so positions inside the reused prefix need
no recomputation (the last shared position is always recomputed, because the token it scores may differ).
Results equal the uncached computation up to float rounding (tested to 1e-4).

The key/value buffers grow by doubling instead of transformers' ``DynamicCache`` concatenating every step (which
copies the whole cache per generated token): generation at 1,500 tokens of context measured 16.8 vs 15.0 tok/s
(medians of 3 interleaved runs, 1 thread).

BOS: a raw prompt (``prompt_logprobs``, ``complete``) gets exactly the special prefix the tokenizer itself adds with
``add_special_tokens=True``. If that is a BOS (Llama-2 style), the engine feeds it but hides it from the returned
tokens (context, not prompt text), so ``top_logprobs[0]`` then exists. SmolLM2's tokenizer adds nothing (its
``bos_token`` ``<|im_start|>`` is the chat-turn marker, which its chat template puts only before each turn), so
nothing is prepended and entry 0 is None, as with OpenAI's models. ``add_bos=True/False`` overrides. Chat prompts
are the chat template's text, which carries its own special tokens; no BOS is added to them either.

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
the positions changed. Cost: ONE extra batched forward (in chunks of 128 queries) for all such positions, not one
per position: each query is the token "1" at position p+1 (``position_ids``) attending, through a 4D additive
mask over [prompt KV | the new queries], to the prompt's keys/values 0..p (already in the KV cache from the main
pass) and to itself; its new KV is dropped afterwards. Verified against running prefix + "1" through the model
separately (tests, 1e-4; ~2e-5 on SmolLM2-135M). The per-position (q0, 1 - pd) are kept in the prefix cache like
the top-K. The extra pass costs about one query token of prefill per affected position, and SmolLM2 ranks "1" in
its top-15 at most positions (829 of a 1,301-token simulator prompt, of which only 274 follow a TAB): measured
3.5 -> 6.3 s uncached and 0.9 -> 1.6 s with the shared prefix cached (1 thread, load average ~4.5 on 2 cores).
Passing ``positions`` (e.g. only the tokens after a TAB) limits the extra work to those positions. Tokenizers
that do not spell "0".."9" as single tokens, or that have a "10" token of their own, get no change (nothing is
hidden, or nothing can be done).

Tokens: strings come from each token's exact bytes (see ``tokens.py``), so ``''.join(tokens) == prompt`` for any
prompt whose characters are not split across tokens; a split multi-byte character (CJK, emoji) yields OpenAI's
``"bytes:\\xe6"`` spellings, which the reference simulator parser reassembles. ``text_offset`` is the character
offset in the prompt where each token's first byte lies.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from autointerp.engine.tokens import TokenTable, char_offsets

log = logging.getLogger("autointerp.engine")

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_STORE_TOPK = 20  # top-K kept per position in a cache entry; requests for more recompute
_LM_HEAD_CHUNK = 128  # rows of logits materialised at once (128 x 49,152 fp32 = 25 MB)
_DIGIT_CHUNK = 128  # number-aware mode: "1"-continuation queries per extra forward
MAX_TOP_LOGPROBS = 100


class EngineError(ValueError):
    """A request the engine cannot serve as asked (bad parameter, prompt too long). The HTTP server answers 400."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# ---------------------------------------------------------------------------------------------------- results


@dataclass
class PromptLogprobs:
    """Legacy echo logprobs of a prompt. Lists are per prompt token; entries not computed are None."""

    tokens: list[str]
    text_offset: list[int]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    token_ids: list[int]
    top_token_ids: list[list[int] | None]
    exact: bool  # ''.join(tokens) == prompt (False when a character is split across tokens: "bytes:" entries)
    # number-aware mode: token indices whose top_logprobs got the merged "10" / complete-"1" entries (None: off)
    digit_merged: list[int] | None = None

    def legacy(self) -> dict[str, Any]:
        """The ``choices[0].logprobs`` object of a legacy completions response."""
        return {
            "tokens": list(self.tokens),
            "token_logprobs": list(self.token_logprobs),
            "top_logprobs": list(self.top_logprobs),
            "text_offset": list(self.text_offset),
        }


@dataclass
class GeneratedToken:
    id: int
    token: str
    bytes: bytes
    logprob: float
    top: list[tuple[int, str, bytes, float]] = field(default_factory=list)  # (id, token, bytes, logprob), best first

    def chat_entry(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.bytes),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for _, t, b, lp in self.top],
        }


@dataclass
class Generation:
    """A sampled continuation. ``logprobs`` (OpenAI chat shape) is None unless logprobs were requested."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int]
    generated: list[GeneratedToken] | None = None
    text_offset: list[int] | None = None  # per generated token, character offset into ``text``
    seed: int | None = None

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    @property
    def logprobs(self) -> dict[str, Any] | None:
        if self.generated is None:
            return None
        return {"content": [g.chat_entry() for g in self.generated], "refusal": None}


# ---------------------------------------------------------------------------------------------------- KV cache


def _new_cache(layers: list[Any]) -> Any:
    from transformers.cache_utils import Cache

    return Cache(layers=layers)


def _growing_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer whose keys/values are views into a buffer that grows by doubling (no per-step cat)."""

        def __init__(self, capacity: int = 0):
            super().__init__()
            self._capacity_hint = capacity
            self._kbuf: torch.Tensor | None = None
            self._vbuf: torch.Tensor | None = None

        def seed_prefix(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
            self._ensure(keys, values, 0, max(capacity, keys.shape[-2]))
            n = keys.shape[-2]
            self._kbuf[..., :n, :].copy_(keys)
            self._vbuf[..., :n, :].copy_(values)
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self.keys, self.values = self._kbuf[..., :n, :], self._vbuf[..., :n, :]

        def _ensure(self, k: torch.Tensor, v: torch.Tensor, used: int, needed: int) -> None:
            cap = 0 if self._kbuf is None else self._kbuf.shape[-2]
            if needed <= cap:
                return
            new_cap = max(needed, 2 * cap, self._capacity_hint, 64)
            kb = k.new_empty(k.shape[:-2] + (new_cap, k.shape[-1]))
            vb = v.new_empty(v.shape[:-2] + (new_cap, v.shape[-1]))
            if used:
                kb[..., :used, :].copy_(self.keys)
                vb[..., :used, :].copy_(self.values)
            self._kbuf, self._vbuf = kb, vb

        def update(self, key_states, value_states, *args, **kwargs):  # type: ignore[override]
            if not self.is_initialized:
                self.dtype, self.device = key_states.dtype, key_states.device
                self.is_initialized = True
                self.keys = self.values = None
            used = 0 if self.keys is None else self.keys.shape[-2]
            total = used + key_states.shape[-2]
            self._ensure(key_states, value_states, used, total)
            self._kbuf[..., used:total, :].copy_(key_states)
            self._vbuf[..., used:total, :].copy_(value_states)
            self.keys, self.values = self._kbuf[..., :total, :], self._vbuf[..., :total, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return 0 if self.keys is None else self.keys.shape[-2]

        def truncate(self, n: int) -> None:
            """Forget every position from ``n`` on (the buffer keeps its capacity)."""
            if self.keys is not None and self.keys.shape[-2] > n:
                self.keys, self.values = self._kbuf[..., :n, :], self._vbuf[..., :n, :]

    return GrowingLayer


@dataclass
class _Entry:
    """One stored request: KV for ``ids`` plus the per-position top-K it computed (``have`` marks which)."""

    ids: torch.Tensor  # (L,) int64
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (1, heads, L, head_dim) views
    top_ids: torch.Tensor | None  # (L, K) int64; row r = prediction for token r+1
    top_lps: torch.Tensor | None  # (L, K) float32
    next_lp: torch.Tensor | None  # (L,) float32: logprob of ids[r+1] from row r
    have: torch.Tensor  # (L,) bool
    # number-aware mode, row r: [log P("0" | ids[:r+1] + "1"), log P(no digit | ids[:r+1] + "1")]; NaN: not computed
    dig: torch.Tensor | None = None  # (L, 2) float32

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        return 0 if self.top_ids is None else int(self.top_ids.shape[1])


class _Rows:
    """Per-row results of one forward: top-K ids/logprobs and the next token's logprob, for rows marked ``have``."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.top_ids = torch.zeros((n, k), dtype=torch.int64)
        self.top_lps = torch.zeros((n, k), dtype=torch.float32)
        self.next_lp = torch.full((n,), float("nan"), dtype=torch.float32)
        self.have = torch.zeros(n, dtype=torch.bool)
        self.dig = torch.full((n, 2), float("nan"), dtype=torch.float32)  # see _Entry.dig


# ---------------------------------------------------------------------------------------------------- engine


class LocalEngine:
    """A causal LM served in-process. All model work runs under one lock (CPU-bound: one request at a time).

    ``threads``: ``torch.set_num_threads`` (process-wide); None means 1. Measured on the 2-core machines with other
    jobs running: 1 thread prefilled ~520 tok/s and generated ~18 tok/s; 2 threads fell to 120-380 tok/s and
    0.7-10 tok/s (OpenMP threads spin-waiting for a core another process holds), and with OMP_WAIT_POLICY=PASSIVE
    they only matched 1 thread. On an idle machine 2 threads prefill ~1.6x faster: pass ``threads=2`` there.
    ``dtype``: float32 (default; the reference numerics). bfloat16 prefills ~3.7x faster on CPUs with AMX, but
    its prompt logprobs differ from float32 by ~0.05 nats on average (0.4 at worst): opt-in only.
    ``cache_entries``: size of the prefix KV LRU (0 disables prefix caching); ``cache_max_tokens`` bounds the
    total tokens held (KV memory is ~46 KB per token for SmolLM2-135M in fp32).
    ``number_aware_logprobs``: the default of ``prompt_logprobs(merge_digit_numbers=...)`` (and so of the HTTP
    server's echo path): merged "10" / complete-"1" entries for digit-splitting tokenizers (module docstring).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        threads: int | None = None,
        dtype: torch.dtype = torch.float32,
        cache_entries: int = 4,
        cache_max_tokens: int = 16384,
        add_bos: bool | None = None,
        model_name: str | None = None,
        number_aware_logprobs: bool = False,
        number_aware_after: str | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        torch.set_num_threads(int(threads) if threads is not None else 1)
        self.model_dir = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, local_files_only=True)
        model.eval()
        self.model = model
        self.config = model.config
        self._base = model.base_model
        self._lm_head = model.get_output_embeddings()
        self._softcap = getattr(self.config, "final_logit_softcapping", None)
        self.vocab_size = int(self._lm_head.weight.shape[0])
        self.max_context = int(getattr(self.config, "max_position_embeddings", 0) or 1 << 30)
        self.model_name = model_name or DEFAULT_MODEL_NAME
        self.table = TokenTable(self.tokenizer, self.vocab_size)
        self._bos_prefix = self._detect_bos(add_bos)
        self._eos_ids = self._detect_eos()
        self._layer_cls = _growing_layer_class()
        self._num_layers = int(self.config.get_text_config(decoder=True).num_hidden_layers)
        self._lock = threading.Lock()  # the model and the prefix store: one request at a time
        self._tok_lock = threading.Lock()  # Rust tokenizers can raise "Already borrowed" under concurrent use
        self._digit_ids = self._detect_digits()
        self.number_aware_logprobs = bool(number_aware_logprobs)
        # Only positions right after a token ending with this text get the extra "1" query (the simulator reads
        # values after a TAB only; SmolLM2 ranks "1" in the top-15 at most positions, so this saves most of the pass).
        self.number_aware_after = number_aware_after
        if self.number_aware_logprobs and self._digit_ids is None:
            log.warning("number_aware_logprobs: this tokenizer does not split numbers into single-digit tokens "
                        "(or has a \"10\" token); the mode changes nothing")
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._entry_seq = 0
        self.cache_entries = int(cache_entries)
        self.cache_max_tokens = int(cache_max_tokens)
        self.stats = {"requests": 0, "prefill_tokens": 0, "reused_tokens": 0, "generated_tokens": 0}
        # timings of the latest request: prefill_s/prefill_tokens/reused_tokens, decode_s/decode_tokens
        self.last_timing: dict[str, float] = {}
        log.info(
            "local engine: %s (%s, %d threads) loaded in %.1fs; bos prefix %s; eos ids %s",
            model_dir, dtype, torch.get_num_threads(), time.perf_counter() - t0, self._bos_prefix,
            sorted(self._eos_ids),
        )

    # ------------------------------------------------------------------------------------------ setup helpers

    def _detect_bos(self, add_bos: bool | None) -> list[int]:
        bos = self.tokenizer.bos_token_id
        if add_bos is False:
            return []
        if add_bos is True:
            if bos is None:
                raise EngineError("add_bos=True but the tokenizer has no bos_token")
            return [int(bos)]
        probe = "a"
        with_special = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        without = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        if len(with_special) > len(without) and with_special[-len(without):] == without:
            return [int(i) for i in with_special[: len(with_special) - len(without)]]
        return []

    def _detect_eos(self) -> set[int]:
        ids: set[int] = set()
        gen_cfg = getattr(self.model, "generation_config", None)
        for src in (getattr(gen_cfg, "eos_token_id", None), self.tokenizer.eos_token_id):
            if src is None:
                continue
            ids.update(int(i) for i in (src if isinstance(src, (list, tuple)) else [src]))
        # a document boundary is an end too (base-model completions emit it)
        eot = self.tokenizer.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in self.tokenizer.get_vocab() else None
        if isinstance(eot, int) and eot in self.table.special:
            ids.add(eot)
        return ids

    def _detect_digits(self) -> list[int] | None:
        """Ids of the tokens spelled exactly "0".."9" (index = digit), or None when the number-aware mode does not
        apply: a digit has no single-token spelling, or some token is spelled "10" (then "10" is not hidden)."""
        strings = self.table.strings
        if "10" in strings:
            return None
        by_digit: dict[str, list[int]] = {str(d): [] for d in range(10)}
        for i, s in enumerate(strings):
            if s in by_digit and i not in self.table.special:
                by_digit[s].append(i)
        ids: list[int] = []
        for d in range(10):
            cands = by_digit[str(d)]
            if not cands:
                return None
            enc = self.tokenize(str(d))
            ids.append(enc[0] if len(enc) == 1 and enc[0] in cands else cands[0])
        return ids

    # ------------------------------------------------------------------------------------------ tokenisation

    def tokenize(self, text: str) -> list[int]:
        """Token ids of raw text as the engine feeds it (hidden BOS not included)."""
        if not isinstance(text, str):
            raise EngineError("prompt must be a string", "prompt")
        with self._tok_lock:
            return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The chat-template text for ``messages`` with the assistant generation prompt appended."""
        msgs = _normalise_messages(messages)
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineError("this model's tokenizer has no chat template; use completions")
        with self._tok_lock:
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    # ------------------------------------------------------------------------------------------ public API

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int | None = None,
        seed: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        stop: str | Sequence[str] | None = None,
        *,
        ignore_eos: bool = False,
    ) -> Generation:
        """Sample an assistant reply. ``logprobs`` are of the model's own (temperature-1, untruncated) distribution.

        ``ignore_eos`` keeps sampling past the end token (for benchmarks; vLLM's option of the same name).
        """
        text = self.render_chat(messages)
        ids = self.tokenize(text)  # the template text carries its own special tokens; no BOS added
        return self._generate_locked(ids, temperature, top_p, max_tokens, seed, logprobs, top_logprobs, stop,
                                     ignore_eos)

    def complete(
        self,
        prompt: str,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int | None = 16,
        seed: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        stop: str | Sequence[str] | None = None,
        *,
        ignore_eos: bool = False,
    ) -> Generation:
        """Continue a raw prompt (no chat template; hidden BOS as for ``prompt_logprobs``)."""
        ids = self._bos_prefix + self.tokenize(prompt)
        if not ids:
            raise EngineError("empty prompt", "prompt")
        return self._generate_locked(ids, temperature, top_p, max_tokens, seed, logprobs, top_logprobs, stop,
                                     ignore_eos)

    def prompt_logprobs(
        self, prompt: str, top_logprobs: int = 15, positions: Iterable[int] | None = None,
        merge_digit_numbers: bool | None = None,
    ) -> PromptLogprobs:
        """Echo logprobs of ``prompt``: one forward pass (minus any reused prefix), no sampling.

        ``top_logprobs[i]`` / ``token_logprobs[i]`` describe token i as predicted from tokens < i; entry 0 is None
        (no BOS for SmolLM2). ``positions`` (token indices) limits which entries are computed; others are None.
        ``merge_digit_numbers``: number-aware mode (module docstring): where the top-N holds "1", replace it by
        "10" = P("1")·P("0" | ..1) and "1" = P("1")·(1 − P(digit | ..1)), re-sort, keep N. One extra batched
        forward over those positions. None: the engine's ``number_aware_logprobs`` (False unless constructed so).
        """
        k = _check_top(top_logprobs, "top_logprobs", allow_zero=True)
        if merge_digit_numbers is None:
            merge_digit_numbers = self.number_aware_logprobs
        elif not isinstance(merge_digit_numbers, bool):
            raise EngineError("merge_digit_numbers must be a boolean", "merge_digit_numbers")
        merge = merge_digit_numbers and k > 0 and self._digit_ids is not None
        text_ids = self.tokenize(prompt)
        n_text = len(text_ids)
        b = len(self._bos_prefix)
        ids = self._bos_prefix + text_ids
        if n_text == 0:
            return PromptLogprobs([], [], [], [], [], [], True, [] if merge_digit_numbers else None)
        self._check_length(len(ids))
        wanted = range(n_text) if positions is None else sorted({int(p) for p in positions if 0 <= int(p) < n_text})
        needed_rows = sorted({i + b - 1 for i in wanted if i + b - 1 >= 0})
        with self._lock:
            rows, _, _ = self._forward(ids, needed_rows, max(k, 1), want_last=False, keep=True,
                                       digits=k if merge else 0)
        raw = [self.table.raw[i] if i < len(self.table.raw) else b"" for i in text_ids]
        tokens = [self.table.strings[i] for i in text_ids]
        offsets = char_offsets(prompt, raw)
        exact = offsets is not None and "".join(tokens) == prompt
        if offsets is None:  # normalising tokenizer: fall back to its own offsets and slices
            with self._tok_lock:
                enc = self.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
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
            one = self._digit_ids[1]
            dig = rows.dig.tolist()
        for i in wanted:
            r = i + b - 1
            if r < 0 or not have[r]:
                continue
            token_lps[i] = _finite(next_lp[r])
            if k > 0:
                top_ids[i] = all_ids[r]
                tops[i] = self.top_dict(all_ids[r], all_lps[r])
                if merge and one in all_ids[r] and not math.isnan(dig[r][0]):
                    tops[i] = _merge_ten(tops[i], all_lps[r][all_ids[r].index(one)], dig[r][0], dig[r][1], k)
                    merged.append(i)
            else:
                top_ids[i], tops[i] = [], {}
        return PromptLogprobs(tokens, offsets, token_lps, tops, text_ids, top_ids, exact, merged)

    # cache control (for benchmarks and tests)
    def clear_cache(self) -> None:
        with self._lock:
            self._entries.clear()

    def cache_info(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "tokens": sum(e.length for e in self._entries.values()),
                "max_entries": self.cache_entries,
                **self.stats,
            }

    # ------------------------------------------------------------------------------------------ internals

    def top_dict(self, ids: Sequence[int], lps: Sequence[float]) -> dict[str, float]:
        """{token string: logprob} for parallel id/logprob lists, best first (legacy ``top_logprobs`` entry)."""
        out: dict[str, float] = {}
        for i, lp in zip(ids, lps):
            s = self.table.strings[i] if i < len(self.table.strings) else ""
            if s not in out:  # two ids can share a display string; keep the likelier
                out[s] = _finite(lp)
        return out

    def _check_length(self, n_prompt: int) -> None:
        if n_prompt >= self.max_context:
            raise EngineError(
                f"prompt is {n_prompt} tokens; this model's context is {self.max_context} tokens", "prompt"
            )

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self._lm_head(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _find_prefix(self, ids_t: torch.Tensor) -> tuple[_Entry | None, int]:
        best, best_m, best_key = None, 0, None
        n = ids_t.shape[0]
        for key in list(self._entries.keys()):
            e = self._entries[key]
            m = min(n, e.length)
            if m <= best_m:
                continue
            eq = ids_t[:m] == e.ids[:m]
            common = m if bool(eq.all()) else int(torch.argmin(eq.to(torch.int8)))
            if common > best_m:
                best, best_m = e, common
                best_key = key
        if best is not None:
            self._entries.move_to_end(best_key)
        return best, best_m

    @torch.inference_mode()
    def _forward(
        self, ids: list[int], needed_rows: Sequence[int], k: int, *, want_last: bool, keep: bool,
        capacity: int = 0, digits: int = 0,
    ) -> tuple[_Rows, Any, torch.Tensor | None]:
        """Run the model over ``ids`` reusing the best stored prefix. Returns (rows, cache, last-row logits).

        Row r is the model's output at position r (the distribution of token r+1). ``needed_rows`` get top-K.
        ``digits`` > 0: also fill ``rows.dig`` for the needed rows whose top-``digits`` holds the token "1"
        (number-aware mode; one extra batched forward, see ``_digit_pass``).
        """
        t0 = time.perf_counter()
        n = len(ids)
        ids_t = torch.tensor(ids, dtype=torch.int64)
        k_store = max(k, _STORE_TOPK)
        rows = _Rows(n, k_store)
        needed = torch.zeros(n, dtype=torch.bool)
        if needed_rows:
            needed[torch.tensor(list(needed_rows), dtype=torch.int64)] = True
        entry, common = (None, 0)
        if self.cache_entries > 0 and self._entries:
            entry, common = self._find_prefix(ids_t)
        reuse = 0
        if entry is not None and common > 0:
            reuse = min(common, n - 1)
            # rows taken from the entry must be stored there and score a token inside the common prefix
            valid = torch.zeros(n, dtype=torch.bool)
            lim = min(reuse, common - 1, entry.length)
            if lim > 0 and entry.k >= k_store:
                valid[:lim] = entry.have[:lim]
            bad = needed[:reuse] & ~valid[:reuse]
            if bool(bad.any()):
                reuse = int(torch.argmax(bad.to(torch.int8)))
            if reuse > 0:
                copy_to = min(reuse, common - 1, entry.length)
                if copy_to > 0 and entry.k >= k_store:
                    rows.have[:copy_to] = entry.have[:copy_to]
                    rows.top_ids[:copy_to] = entry.top_ids[:copy_to, :k_store]
                    rows.top_lps[:copy_to] = entry.top_lps[:copy_to, :k_store]
                    rows.next_lp[:copy_to] = entry.next_lp[:copy_to]
            if entry.dig is not None:  # row r's "1"-continuation depends on ids[:r+1] only
                dig_to = min(common, entry.length)
                rows.dig[:dig_to] = entry.dig[:dig_to]
        if digits > 0:  # room for one chunk of "1" queries past the prompt: no regrowth in _digit_pass
            capacity = max(capacity, n + _DIGIT_CHUNK)
        cap = max(capacity, n)
        layers = [self._layer_cls(cap) for _ in range(self._num_layers)]
        if reuse > 0:
            for layer, (kk, vv) in zip(layers, entry.kv):
                layer.seed_prefix(kk[..., :reuse, :], vv[..., :reuse, :], cap)
        cache = _new_cache(layers)
        self.stats["requests"] += 1
        self.stats["prefill_tokens"] += n - reuse
        self.stats["reused_tokens"] += reuse
        out = self._base(input_ids=ids_t[reuse:].unsqueeze(0), past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state[0]  # (n - reuse, d)
        todo_t = torch.nonzero(needed[reuse:]).flatten() + reuse
        if todo_t.numel():
            nxt = torch.full((todo_t.numel(),), -1, dtype=torch.int64)
            has_next = todo_t + 1 < n
            nxt[has_next] = ids_t[todo_t[has_next] + 1]
            for s in range(0, todo_t.numel(), _LM_HEAD_CHUNK):
                sel = todo_t[s : s + _LM_HEAD_CHUNK]
                lsm = torch.log_softmax(self._logits(hidden[sel - reuse]), dim=-1)
                v, i = torch.topk(lsm, k_store, dim=-1)
                rows.top_ids[sel], rows.top_lps[sel] = i, v
                nx = nxt[s : s + _LM_HEAD_CHUNK]
                got = lsm.gather(1, nx.clamp(min=0).unsqueeze(1)).squeeze(1)
                rows.next_lp[sel] = torch.where(nx >= 0, got, torch.full_like(got, float("nan")))
                rows.have[sel] = True
        last = self._logits(hidden[-1:])[0] if want_last else None
        del out, hidden
        n_digit, digit_s = 0, 0.0
        if digits > 0 and self._digit_ids is not None:
            t1 = time.perf_counter()
            one = self._digit_ids[1]
            todo = needed & rows.have & (rows.top_ids[:, :digits] == one).any(dim=1) & torch.isnan(rows.dig[:, 0])
            if self.number_aware_after:
                todo &= torch.tensor([self.table.strings[t].endswith(self.number_aware_after) if t < len(self.table.strings)
                                      else False for t in ids], dtype=torch.bool)
            todo_rows = torch.nonzero(todo).flatten()
            n_digit = int(todo_rows.numel())
            if n_digit:
                self._digit_pass(cache, n, todo_rows, rows)
            digit_s = time.perf_counter() - t1
        self.last_timing = {"prefill_s": time.perf_counter() - t0 - digit_s, "prefill_tokens": n - reuse,
                            "reused_tokens": reuse, "decode_s": 0.0, "decode_tokens": 0}
        if digits > 0:
            self.last_timing.update(digit_s=digit_s, digit_queries=n_digit)
        if keep:
            self._store(ids_t, cache, rows)
        return rows, cache, last

    def _digit_pass(self, cache: Any, n: int, todo_rows: torch.Tensor, rows: _Rows) -> None:
        """Number-aware mode: for each row r in ``todo_rows``, the distribution after ids[:r+1] + "1".

        All rows in one batched forward per chunk (no per-position passes): query j is the token "1" at position
        r_j + 1, and a 4D additive mask (1, 1, m, n + m) over [the prompt's n cached keys | the m new queries]
        lets it see keys 0..r_j and itself only. Each chunk's new keys/values are dropped from the cache after it.
        Fills rows.dig[r] = [log P("0" | ..1), log P(no digit | ..1)] (the latter a logsumexp over the non-digit
        tokens, exact even when the digits take nearly all the mass).
        """
        digit_ids = torch.tensor(self._digit_ids, dtype=torch.int64)
        one, zero = self._digit_ids[1], self._digit_ids[0]
        dtype = self._lm_head.weight.dtype
        neg = torch.finfo(dtype).min
        key_pos = torch.arange(n)
        for s in range(0, int(todo_rows.numel()), _DIGIT_CHUNK):
            sel = todo_rows[s : s + _DIGIT_CHUNK]
            m = int(sel.numel())
            mask = torch.full((m, n + m), neg, dtype=dtype)
            mask[:, :n].masked_fill_(key_pos.unsqueeze(0) <= sel.unsqueeze(1), 0.0)
            mask[:, n:].fill_diagonal_(0.0)
            out = self._base(
                input_ids=torch.full((1, m), one, dtype=torch.int64), position_ids=(sel + 1).unsqueeze(0),
                attention_mask=mask[None, None], past_key_values=cache, use_cache=True,
            )
            for layer in cache.layers:
                layer.truncate(n)
            lsm = torch.log_softmax(self._logits(out.last_hidden_state[0]), dim=-1)
            rows.dig[sel, 0] = lsm[:, zero]
            lsm[:, digit_ids] = float("-inf")
            rows.dig[sel, 1] = torch.logsumexp(lsm, dim=-1)

    def _store(self, ids_t: torch.Tensor, cache: Any, rows: _Rows | None) -> None:
        if self.cache_entries <= 0:
            return
        n = int(ids_t.shape[0])
        if n > self.cache_max_tokens:
            return
        kv = [(layer.keys[..., :n, :], layer.values[..., :n, :]) for layer in cache.layers]
        if rows is not None and bool(rows.have.any()):
            entry = _Entry(ids_t, kv, rows.top_ids[:n], rows.top_lps[:n], rows.next_lp[:n], rows.have[:n].clone(),
                           rows.dig[:n] if bool((~torch.isnan(rows.dig[:n, 0])).any()) else None)
        else:
            entry = _Entry(ids_t, kv, None, None, None, torch.zeros(n, dtype=torch.bool))
        # an older entry that is a prefix of this one, with nothing this one lacks, is redundant
        for key in list(self._entries.keys()):
            e = self._entries[key]
            if e.length <= n and bool((e.ids == ids_t[: e.length]).all()):
                if not bool(e.have.any()) or (entry.k >= e.k and bool((entry.have[: e.length] | ~e.have).all())):
                    del self._entries[key]
        self._entry_seq += 1
        self._entries[self._entry_seq] = entry
        while len(self._entries) > self.cache_entries or (
            sum(e.length for e in self._entries.values()) > self.cache_max_tokens and len(self._entries) > 1
        ):
            self._entries.popitem(last=False)

    def _generate_locked(
        self,
        ids: list[int],
        temperature: float,
        top_p: float,
        max_tokens: int | None,
        seed: int | None,
        logprobs: bool,
        top_logprobs: int,
        stop: str | Sequence[str] | None,
        ignore_eos: bool = False,
    ) -> Generation:
        temperature = _check_float(temperature, "temperature", 0.0, 2.0, default=1.0)
        top_p = _check_float(top_p, "top_p", 0.0, 1.0, default=1.0)
        if top_p <= 0.0:
            raise EngineError("top_p must be > 0", "top_p")
        top_k = _check_top(top_logprobs or 0, "top_logprobs", allow_zero=True) if logprobs else 0
        stops = _check_stop(stop)
        n = len(ids)
        self._check_length(n)
        room = self.max_context - n
        if max_tokens is None:
            limit = room
        else:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
                raise EngineError("max_tokens must be a non-negative integer", "max_tokens")
            limit = min(int(max_tokens), room)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise EngineError("seed must be an integer", "seed")
        used_seed = seed if seed is not None else random.SystemRandom().randrange(1 << 62)
        gen = torch.Generator()
        gen.manual_seed(int(used_seed) % (1 << 64))
        with self._lock:
            return self._generate(ids, temperature, top_p, limit, gen, used_seed, logprobs, top_k, stops,
                                  frozenset() if ignore_eos else frozenset(self._eos_ids))

    @torch.inference_mode()
    def _generate(
        self, ids: list[int], temperature: float, top_p: float, limit: int, gen: torch.Generator, seed: int,
        logprobs: bool, top_k: int, stops: list[str], eos_ids: frozenset[int],
    ) -> Generation:
        n = len(ids)
        out_ids: list[int] = []
        generated: list[GeneratedToken] | None = [] if logprobs else None
        finish = "length"
        text = ""
        if limit <= 0:
            return Generation("", "length", n, 0, [], generated, [] if logprobs else None, seed)
        # buffers start with room for up to 1,024 new tokens and double if a longer answer needs more
        _, cache, logits = self._forward(ids, [], 1, want_last=True, keep=False, capacity=n + min(limit, 1024))
        fed = list(ids)
        cut: int | None = None
        t_decode = time.perf_counter()
        while True:
            tok = _sample(logits, temperature, top_p, gen)
            if generated is not None:
                lsm = torch.log_softmax(logits, dim=-1)
                alts: list[tuple[int, str, bytes, float]] = []
                if top_k > 0:
                    v, i = torch.topk(lsm, top_k)
                    alts = [(t, self.table.strings[t], self.table.raw[t], _finite(lp))
                            for t, lp in zip(i.tolist(), v.tolist())]
                generated.append(
                    GeneratedToken(tok, self.table.strings[tok], self.table.raw[tok], _finite(float(lsm[tok])), alts)
                )
            if tok in eos_ids:
                finish = "stop"
                if generated is not None:
                    generated.pop()  # the end token is not part of the answer
                break
            out_ids.append(tok)
            if stops:
                text = self.table.text_of(out_ids)
                hit = _first_stop(text, stops)
                if hit is not None:
                    cut, finish = hit, "stop"
                    break
            if len(out_ids) >= limit:
                break
            fed.append(tok)
            step = self._base(input_ids=torch.tensor([[tok]]), past_key_values=cache, use_cache=True)
            logits = self._logits(step.last_hidden_state[0, -1:])[0]
        self.stats["generated_tokens"] += len(out_ids)
        self.last_timing["decode_s"] = time.perf_counter() - t_decode
        self.last_timing["decode_tokens"] = len(out_ids)
        self._store(torch.tensor(fed, dtype=torch.int64), cache, None)
        text = self.table.text_of(out_ids)
        if cut is not None:
            text = text[:cut]
        offsets = None
        if generated is not None:
            offsets, pos = [], 0
            for g in generated:
                offsets.append(min(pos, len(text)))
                pos += len(g.bytes.decode("utf-8", errors="ignore"))
        return Generation(text, finish, n, len(out_ids), out_ids, generated, offsets, seed)


# ---------------------------------------------------------------------------------------------------- helpers


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = torch.sort(probs, descending=True)
        keep = (torch.cumsum(sp, 0) - sp) < top_p  # smallest set reaching top_p; the top token always stays
        sp, si = sp[keep], si[keep]
        return int(si[torch.multinomial(sp, 1, generator=gen)])
    return int(torch.multinomial(probs, 1, generator=gen))


def _merge_ten(top: dict[str, float], lp_one: float, lq0: float, lnodigit: float, k: int) -> dict[str, float]:
    """Number-aware top-N: "10" <- P("1")·P("0" | ..1), "1" <- P("1")·P(no digit | ..1); re-sorted, cut to k."""
    out = dict(top)  # no "10" in it: the mode is off for vocabularies with a "10" token (_detect_digits)
    out["10"] = _finite(lp_one + lq0)
    out["1"] = _finite(lp_one + lnodigit)
    ranked = sorted(out.items(), key=lambda kv: -math.inf if kv[1] is None else kv[1], reverse=True)
    return dict(ranked[:k])


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops]
    hits = [h for h in hits if h >= 0]
    return min(hits) if hits else None


def _finite(x: float) -> float:
    if math.isnan(x):
        return None  # type: ignore[return-value]
    if math.isinf(x):
        return -9999.0
    return float(x)


def _check_float(value: Any, name: str, lo: float, hi: float, *, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EngineError(f"{name} must be a number", name)
    if not lo <= value <= hi:
        raise EngineError(f"{name} must be between {lo} and {hi}", name)
    return float(value)


def _check_top(value: Any, name: str, *, allow_zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"{name} must be an integer", name)
    if value < (0 if allow_zero else 1) or value > MAX_TOP_LOGPROBS:
        raise EngineError(f"{name} must be between {0 if allow_zero else 1} and {MAX_TOP_LOGPROBS}", name)
    return int(value)


def _check_stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise EngineError("stop must be a string or a list of at most 4 strings", "stop")
    return [s for s in stop if s]


def _normalise_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise EngineError("messages must be a non-empty list", "messages")
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise EngineError("each message needs a string 'role'", "messages")
        content = m.get("content")
        if content is None:
            content = ""
        elif isinstance(content, list):  # content parts: only text is supported
            parts = []
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise EngineError("only text content parts are supported", "messages")
                parts.append(part["text"])
            content = "".join(parts)
        elif not isinstance(content, str):
            raise EngineError("message content must be a string or a list of text parts", "messages")
        role = m["role"]
        if role == "developer":
            role = "system"
        out.append({"role": role, "content": content})
    return out
