"""In-process causal-LM engine (plain transformers on CPU): chat sampling and prompt-token top-N logprobs.

What the explain -> simulate workflow needs from an embedded model, without a server process:

* ``chat``: the chat template, temperature / top_p sampling from a per-request seeded ``torch.Generator`` (never
  global RNG state; ``generation.py``), greedy at temperature 0, ``max_tokens``, stop strings, and per-token
  logprobs in OpenAI's chat shape.
* ``prompt_logprobs``: what legacy ``/v1/completions`` returns for ``echo=True, max_tokens=0, logprobs=N``, with an
  opt-in number-aware mode that folds "1" then "0" into a "10" alternative (``logprobs.py``).
* ``complete``: raw-prompt generation (legacy completions without echo).

This module is the core that composes the parts: ``kvcache.py`` (prefix KV reuse and growing buffers),
``generation.py``, ``logprobs.py``, ``validation.py`` (request checks), ``results.py`` (returned shapes) and
``tokens.py`` (exact token bytes and strings).

BOS: a raw prompt (``prompt_logprobs``, ``complete``) gets exactly the special prefix the tokenizer itself adds with
``add_special_tokens=True``. If that is a BOS (Llama-2 style), the engine feeds it but hides it from the returned
tokens (context, not prompt text), so ``top_logprobs[0]`` then exists. SmolLM2's tokenizer adds nothing (its
``bos_token`` ``<|im_start|>`` is the chat-turn marker, which its chat template puts only before each turn), so
nothing is prepended and entry 0 is None, as with OpenAI's models. ``add_bos=True/False`` overrides. Chat prompts
are the chat template's text, which carries its own special tokens; no BOS is added to them either.

Tokens: strings come from each token's exact bytes (see ``tokens.py``), so ``''.join(tokens) == prompt`` for any
prompt whose characters are not split across tokens; a split multi-byte character (CJK, emoji) yields OpenAI's
``"bytes:\\xe6"`` spellings, which the reference simulator parser reassembles. ``text_offset`` is the character
offset in the prompt where each token's first byte lies.

Cancellation: ``chat``, ``complete`` and ``prompt_logprobs`` take ``cancelled``, a cheap check the HTTP server passes
(is the client still connected?). It is asked once the request holds the model lock, before every decode step and
between the unembedding chunks of an echo; when it says yes the call raises ``RequestCancelled`` and leaves the
prefix cache as it was. One forward pass is never interrupted. Without it (the default) nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from autointerp.engine import generation
from autointerp.engine import logprobs as echo  # not `logprobs`: chat() has a parameter of that name
from autointerp.engine.kvcache import STORE_TOPK, PrefixStore, Rows
from autointerp.engine.results import GeneratedToken, Generation, PromptLogprobs, finite
from autointerp.engine.tokens import TokenTable
from autointerp.engine.validation import EngineError, normalise_messages

__all__ = ["EngineError", "GeneratedToken", "Generation", "LocalEngine", "PromptLogprobs", "RequestCancelled"]

log = logging.getLogger("autointerp.engine")

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_LM_HEAD_CHUNK = 128  # rows of logits materialised at once (128 x 49,152 fp32 = 25 MB)


class RequestCancelled(Exception):
    """An engine call stopped because its ``cancelled()`` check said yes (the HTTP client went away).

    ``generated_tokens``: tokens sampled before it stopped (0 when it stopped before generating)."""

    def __init__(self, generated_tokens: int = 0):
        super().__init__(f"request cancelled after {generated_tokens} generated tokens")
        self.generated_tokens = generated_tokens


class LocalEngine:
    """A causal LM served in-process. All model work runs under one lock (CPU-bound: one request at a time).

    ``threads``: ``torch.set_num_threads`` (process-wide); None means 1. Measured on the 2-core machines with other
    jobs running: 1 thread prefilled ~520 tok/s and generated ~18 tok/s; 2 threads fell to 120-380 tok/s and
    0.7-10 tok/s (OpenMP threads spin-waiting for a core another process holds), and with OMP_WAIT_POLICY=PASSIVE
    they only matched 1 thread. On an idle machine 2 threads prefill ~1.6x faster: pass ``threads=2`` there.
    ``dtype``: float32 (default; the reference numerics). bfloat16 prefills ~3.7x faster on CPUs with AMX, but
    its prompt logprobs differ from float32 by ~0.05 nats on average (0.4 at worst): opt-in only.
    ``cache_entries``: size of the prefix KV LRU (0 disables prefix caching); ``cache_max_tokens`` bounds the
    total tokens held (KV memory is ~46 KB per token for SmolLM2-135M in fp32). Both can be changed later.
    ``number_aware_logprobs``: the default of ``prompt_logprobs(merge_digit_numbers=...)`` (and so of the HTTP
    server's echo path): merged "10" / complete-"1" entries for digit-splitting tokenizers (``logprobs.py``).
    ``number_aware_after``: apply that mode only at positions right after a token ending with this text ("\\t").
    ``echo_positions_near``: the default of ``prompt_logprobs(positions_near=...)`` (and so of the HTTP server's
    echo path): compute prompt logprobs only at the tokens that follow this text, or begin with it and go on
    ("\\t": the simulator reads nothing else). The unembedding (49,152 logits per token) then runs on one row
    per excerpt token instead of ~4, and the response carries that many top-N dicts instead of one per token.
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
        echo_positions_near: str | None = None,
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
        self._lock = threading.Lock()  # the model and the prefix store: one request at a time
        self._tok_lock = threading.Lock()  # Rust tokenizers can raise "Already borrowed" under concurrent use
        # the calling thread's cancelled() check: per thread, so the loops deep inside (decode steps, echo chunks in
        # logprobs.py) see it without a parameter through every layer; requests run one per thread
        self._request = threading.local()
        self._digit_ids = echo.detect_digits(self.table, self.tokenize)
        self.number_aware_logprobs = bool(number_aware_logprobs)
        self.number_aware_after = number_aware_after
        self.echo_positions_near = echo_positions_near or None
        if self.number_aware_logprobs and self._digit_ids is None:
            log.warning("number_aware_logprobs: this tokenizer does not split numbers into single-digit tokens "
                        "(or has a \"10\" token); the mode changes nothing")
        num_layers = int(self.config.get_text_config(decoder=True).num_hidden_layers)
        self.prefix = PrefixStore(num_layers, cache_entries, cache_max_tokens)
        # cancelled: calls stopped by their cancelled() check (their tokens count in generated_tokens)
        self.stats = {"requests": 0, "prefill_tokens": 0, "reused_tokens": 0, "generated_tokens": 0, "cancelled": 0}
        # timings of the latest request: prefill_s/prefill_tokens/reused_tokens, decode_s/decode_tokens
        self.last_timing: dict[str, float] = {}
        log.info(
            "local engine: %s (%s, %d threads) loaded in %.1fs; bos prefix %s; eos ids %s",
            model_dir, dtype, torch.get_num_threads(), time.perf_counter() - t0, self._bos_prefix,
            sorted(self._eos_ids),
        )

    # the prefix store's limits, as engine attributes (benchmarks switch caching on and off through them)
    @property
    def cache_entries(self) -> int:
        return self.prefix.max_entries

    @cache_entries.setter
    def cache_entries(self, value: int) -> None:
        self.prefix.max_entries = int(value)

    @property
    def cache_max_tokens(self) -> int:
        return self.prefix.max_tokens

    @cache_max_tokens.setter
    def cache_max_tokens(self, value: int) -> None:
        self.prefix.max_tokens = int(value)

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

    # ------------------------------------------------------------------------------------------ tokenisation

    def tokenize(self, text: str) -> list[int]:
        """Token ids of raw text as the engine feeds it (hidden BOS not included)."""
        if not isinstance(text, str):
            raise EngineError("prompt must be a string", "prompt")
        with self._tok_lock:
            return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The chat-template text for ``messages`` with the assistant generation prompt appended."""
        msgs = normalise_messages(messages)
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
        cancelled: Callable[[], bool] | None = None,
    ) -> Generation:
        """Sample an assistant reply. ``logprobs`` are of the model's own (temperature-1, untruncated) distribution.

        ``seed``: the sampler is a fresh ``torch.Generator`` seeded from it for this request alone, so the same
        request with the same seed gives the same reply in any engine instance or process, whatever was served
        before (up to the prefix cache's float rounding; ``generation.py``). None: a seed drawn from the OS
        (``random.SystemRandom``), so replies differ between calls; it is returned as ``Generation.seed``.
        Temperature 0 is greedy and ignores the seed.
        ``ignore_eos`` keeps sampling past the end token (for benchmarks; vLLM's option of the same name).
        ``cancelled``: asked before the work and each decode step; True raises ``RequestCancelled`` (module doc).
        """
        text = self.render_chat(messages)
        ids = self.tokenize(text)  # the template text carries its own special tokens; no BOS added
        with self._cancellable(cancelled):
            return generation.generate(self, ids, temperature, top_p, max_tokens, seed, logprobs, top_logprobs,
                                       stop, ignore_eos)

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
        cancelled: Callable[[], bool] | None = None,
    ) -> Generation:
        """Continue a raw prompt (no chat template; hidden BOS as for ``prompt_logprobs``; ``seed`` and ``cancelled``
        as for ``chat``)."""
        ids = self._bos_prefix + self.tokenize(prompt)
        if not ids:
            raise EngineError("empty prompt", "prompt")
        with self._cancellable(cancelled):
            return generation.generate(self, ids, temperature, top_p, max_tokens, seed, logprobs, top_logprobs,
                                       stop, ignore_eos)

    def prompt_logprobs(
        self, prompt: str, top_logprobs: int = 15, positions: Iterable[int] | None = None,
        merge_digit_numbers: bool | None = None, positions_near: str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> PromptLogprobs:
        """Echo logprobs of ``prompt``: one forward pass (minus any reused prefix), no sampling.

        ``top_logprobs[i]`` / ``token_logprobs[i]`` describe token i as predicted from tokens < i; entry 0 is None
        (no BOS for SmolLM2). ``positions`` (token indices) limits which entries are computed; others are None.
        ``merge_digit_numbers``: number-aware mode (``logprobs.py``): where the top-N holds "1", replace it by
        "10" = P("1")·P("0" | ..1) and "1" = P("1")·(1 − P(digit | ..1)), re-sort, keep N (only right after
        ``number_aware_after`` when that is set). One extra batched forward over those positions. None: the
        engine's ``number_aware_logprobs`` (False unless constructed so).
        ``positions_near``: only tokens that follow a token ending with this text, or begin with it and go on (within
        ``positions`` when both are given); the other entries are None. Tokens and offsets stay complete.
        ``cancelled``: asked before the forward pass and between its unembedding chunks (module doc).
        """
        with self._cancellable(cancelled):
            return echo.prompt_logprobs(self, prompt, top_logprobs, positions, merge_digit_numbers, positions_near)

    # cache control (for benchmarks and tests)
    def clear_cache(self) -> None:
        with self._lock:
            self.prefix.clear()

    def cache_info(self) -> dict[str, Any]:
        with self._lock:
            return {"entries": len(self.prefix), "tokens": self.prefix.tokens(), "max_entries": self.cache_entries,
                    **self.stats}

    def top_dict(self, ids: Sequence[int], lps: Sequence[float]) -> dict[str, float]:
        """{token string: logprob} for parallel id/logprob lists, best first (legacy ``top_logprobs`` entry)."""
        out: dict[str, float] = {}
        for i, lp in zip(ids, lps):
            s = self.table.strings[i] if i < len(self.table.strings) else ""
            if s not in out:  # two ids can share a display string; keep the likelier
                out[s] = finite(lp)
        return out

    # ------------------------------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _cancellable(self, cancelled: Callable[[], bool] | None) -> Iterator[None]:
        before = getattr(self._request, "cancelled", None)
        self._request.cancelled = cancelled
        try:
            yield
        finally:
            self._request.cancelled = before

    def _stop_if_cancelled(self, generated: int = 0) -> None:
        """Raise ``RequestCancelled`` if this thread's request has a ``cancelled()`` check that says yes. Call under
        ``_lock``, between steps; ``generated``: tokens sampled so far."""
        check = getattr(self._request, "cancelled", None)
        if check is not None and check():
            self.stats["cancelled"] += 1
            self.stats["generated_tokens"] += generated
            raise RequestCancelled(generated)

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

    @torch.inference_mode()
    def _forward(
        self, ids: list[int], needed_rows: Sequence[int], k: int, *, want_last: bool, keep: bool,
        capacity: int = 0, digits: int = 0,
    ) -> tuple[Rows, Any, torch.Tensor | None]:
        """Run the model over ``ids`` reusing the best stored prefix. Returns (rows, cache, last-row logits).

        Row r is the model's output at position r (the distribution of token r+1). ``needed_rows`` get top-K.
        ``digits`` > 0: also fill ``rows.dig`` for the needed rows whose top-``digits`` holds the token "1"
        (number-aware mode; one extra batched forward, see ``logprobs.digit_pass``). Call under ``_lock``.
        First of all (the lock may have been a long wait) and between chunks, it stops if the caller has gone.
        """
        self._stop_if_cancelled()
        t0 = time.perf_counter()
        n = len(ids)
        ids_t = torch.tensor(ids, dtype=torch.int64)
        k_store = max(k, STORE_TOPK)
        rows = Rows(n, k_store)
        needed = torch.zeros(n, dtype=torch.bool)
        if needed_rows:
            needed[torch.tensor(list(needed_rows), dtype=torch.int64)] = True
        entry, reuse = self.prefix.reuse(ids_t, needed, rows)
        if digits > 0:  # room for one chunk of "1" queries past the prompt: no regrowth in digit_pass
            capacity = max(capacity, n + echo.DIGIT_CHUNK)
        cache = self.prefix.new_cache(max(capacity, n), entry, reuse)
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
                if s:
                    self._stop_if_cancelled()
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
            self._stop_if_cancelled()
            t1 = time.perf_counter()
            todo_rows = echo.digit_rows(self, ids, needed, rows, digits)
            n_digit = int(todo_rows.numel())
            if n_digit:
                echo.digit_pass(self, cache, n, todo_rows, rows)
            digit_s = time.perf_counter() - t1
        self.last_timing = {"prefill_s": time.perf_counter() - t0 - digit_s, "prefill_tokens": n - reuse,
                            "reused_tokens": reuse, "decode_s": 0.0, "decode_tokens": 0}
        if digits > 0:
            self.last_timing.update(digit_s=digit_s, digit_queries=n_digit)
        if keep:
            self.prefix.store(ids_t, cache, rows)
        return rows, cache, last
