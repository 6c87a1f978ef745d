"""One async client per role over any OpenAI-compatible endpoint: cache, retries, limits, ledger.

Retries use tenacity rather than the SDK's own (the SDK gets max_retries=0) because: the SDK does not retry a 200
with a malformed body; its backoff sleeps inside our concurrency slot and rate-limit budget; and we need the attempt
count for the ledger. tenacity gives the loop, stop and jitter; we only add the Retry-After rule.
Requests go through the SDK's documented raw route (client.post) and are parsed from plain JSON dicts; see _post.
Concurrency is an asyncio.Semaphore. Rate limits use the small GCRA pacer below rather than aiolimiter: aiolimiter
binds to one event loop (and warns when reused), so a client used across successive asyncio.run() calls would
reset its budget each time, and it refuses requests larger than its bucket; the pacer's whole state is one
monotonic timestamp, so neither problem arises.
"""

from __future__ import annotations

import array
import asyncio
import base64
import dataclasses
import difflib
import email.utils
import json
import logging
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

try:  # the HTTP library the installed openai SDK is built on
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx as _httpx  # type: ignore[no-redef]

from autointerp.llm.cache import ResponseCache, cache_key
from autointerp.llm.config import RoleConfig
from autointerp.llm.ledger import Ledger, UsageRecord, estimate_cost
from autointerp.common.progress import Progress

log = logging.getLogger("autointerp.llm.client")
_T = TypeVar("_T")
_CLAIM_POLL_S = (0.05, 0.2)  # first and longest sleep between looks while another process holds a key's claim


class LLMError(RuntimeError):
    """Base of the client's errors; each carries a complete one-line message (never the API key)."""


class EndpointError(LLMError):
    """The role's endpoint is unusable (unreachable, rejects the key, does not serve the model); found by the check
    before the first request, and raised by every call of that client."""

    def __init__(self, message: str, *, role: str, model: str, endpoint: str, status: int | None = None):
        super().__init__(message)
        self.role, self.model, self.endpoint, self.status = role, model, endpoint, status

    def copy(self) -> "EndpointError":
        """A fresh instance (each failed call raises its own: re-raising one object grows its traceback)."""
        return EndpointError(str(self), role=self.role, model=self.model, endpoint=self.endpoint, status=self.status)


class LLMRequestError(LLMError):
    """A call failed for good; the message names role, model and endpoint (never the key)."""

    def __init__(self, message: str, *, role: str, model: str, endpoint: str, status: int | None,
                 retryable: bool, attempts: int):
        super().__init__(message)
        self.role, self.model, self.endpoint = role, model, endpoint
        self.status, self.retryable, self.attempts = status, retryable, attempts

    def copy(self) -> "LLMRequestError":
        """A fresh instance, for identical calls that shared this one's request (see LLMClient._call)."""
        return LLMRequestError(str(self), role=self.role, model=self.model, endpoint=self.endpoint,
                               status=self.status, retryable=self.retryable, attempts=self.attempts)


class MalformedResponseError(LLMError):
    """A success status with a body that is not the JSON we asked for. Retried: servers emit these under load."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class LLMResult:
    usage: Usage
    latency_s: float
    cache_key: str
    cache_hit: bool
    attempts: int


@dataclass(frozen=True)
class ChatResult(LLMResult):
    text: str
    finish_reason: str | None
    logprobs: list[dict[str, Any]] | None  # per generated token: {"token", "logprob", "top_logprobs": {tok: lp}}


@dataclass(frozen=True)
class EchoLogprobsResult(LLMResult):
    tokens: list[str]
    text_offsets: list[int]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]]  # {} where the server gives none (the first position)
    # Positions start at the first token at or after this character of the prompt (0: the whole prompt). The
    # simulator reads only its last record's values, so it keeps only those: a few-shot prompt is ~1,200 tokens of
    # up to 20 alternatives each (~0.1-0.7 MB of JSON per call), which millions of cached calls cannot afford.
    from_offset: int = 0


@dataclass(frozen=True)
class EmbedResult(LLMResult):
    vectors: list[list[float]]


# ---------------------------------------------------------------- response parsing (into JSON-able dicts we cache)

def _usage(body: dict[str, Any]) -> dict[str, int]:
    u = body.get("usage") or {}
    return {"prompt_tokens": int(u.get("prompt_tokens") or 0), "completion_tokens": int(u.get("completion_tokens") or 0)}


def _top_dict(entries: Any) -> dict[str, float]:
    if isinstance(entries, dict):  # legacy completions format
        return {str(k): float(v) for k, v in entries.items()}
    out: dict[str, float] = {}
    for e in entries or []:
        out[e["token"]] = max(float(e["logprob"]), out.get(e["token"], -math.inf))
    return out


def _parse_chat(body: dict[str, Any]) -> dict[str, Any]:
    choice = body["choices"][0]
    lp = choice.get("logprobs") or {}
    logprobs = None
    if lp.get("content") is not None:
        logprobs = [{"token": t["token"], "logprob": float(t["logprob"]), "top_logprobs": _top_dict(t.get("top_logprobs"))}
                    for t in lp["content"]]
    return {"text": choice["message"].get("content") or "", "finish_reason": choice.get("finish_reason"),
            "logprobs": logprobs, "usage": _usage(body)}


def _parse_echo(body: dict[str, Any], prompt: str, from_offset: int = 0) -> dict[str, Any]:
    lp = body["choices"][0]["logprobs"]
    tokens, offsets = list(lp["tokens"]), [int(o) for o in lp["text_offset"]]
    token_lps = [None if v is None else float(v) for v in lp["token_logprobs"]]
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    if not (len(tokens) == len(offsets) == len(token_lps) == len(tops)):
        raise ValueError("logprobs arrays differ in length")
    # Keep prompt positions only: some servers (llama-cpp-python) generate despite max_tokens=0.
    keep = [i for i, o in enumerate(offsets) if from_offset <= o < len(prompt)]
    return {"tokens": [tokens[i] for i in keep], "text_offsets": [offsets[i] for i in keep],
            "token_logprobs": [token_lps[i] for i in keep], "top_logprobs": [_top_dict(tops[i]) for i in keep],
            "from_offset": from_offset, "usage": _usage(body)}


def _echo_from(result: EchoLogprobsResult, from_offset: int) -> EchoLogprobsResult:
    """``result`` (kept from an earlier offset) cut to the positions at or after ``from_offset``."""
    keep = [i for i, o in enumerate(result.text_offsets) if o >= from_offset]
    return dataclasses.replace(result, tokens=[result.tokens[i] for i in keep],
                               text_offsets=[result.text_offsets[i] for i in keep],
                               token_logprobs=[result.token_logprobs[i] for i in keep],
                               top_logprobs=[result.top_logprobs[i] for i in keep], from_offset=from_offset)


def _parse_embed(body: dict[str, Any]) -> dict[str, Any]:
    vectors = []
    for d in sorted(body["data"], key=lambda d: d.get("index", 0)):
        e = d["embedding"]
        if isinstance(e, str):  # base64 float32, for servers that ignore encoding_format
            e = array.array("f", base64.b64decode(e)).tolist()
        vectors.append([float(x) for x in e])
    return {"vectors": vectors, "usage": _usage(body)}


async def _post(oa: openai.AsyncOpenAI, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST through the SDK's documented raw route (`client.post(..., cast_to=Response)`): same auth, timeouts and
    typed status errors, but it skips the SDK's per-call TypedDict transform (~0.4 ms CPU, 30% of a call), passes
    server-specific parameters through untouched, and lets us treat an unparsable body as retryable."""
    raw = await oa.post(path, cast_to=_httpx.Response, body=body)
    try:
        out = json.loads(raw.content)
    except ValueError as e:
        # The decoder's message gives only the position, never the body (which may echo request headers).
        raise MalformedResponseError(f"response is not JSON ({len(raw.content)} bytes): "
                                     f"{type(e).__name__} at {getattr(e, 'pos', '?')}") from None
    if not isinstance(out, dict):
        raise MalformedResponseError(f"response JSON is a {type(out).__name__}, not an object")
    return out


def _parsed(parse: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    try:
        return parse(*args)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        # Messages such as float()'s quote body values: keep them short (the client redacts the key as well).
        raise MalformedResponseError(f"unexpected response shape: {type(e).__name__}: {str(e)[:120]}") from None


# ---------------------------------------------------------------- retry policy

_RETRY_STATUS = {408, 409, 429}


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, MalformedResponseError)):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUS or exc.status_code >= 500
    return False


def retry_after_s(exc: BaseException | None) -> float | None:
    """Server-requested delay from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    value: float | None = None
    if ms := headers.get("retry-after-ms"):
        try:
            value = float(ms) / 1000
        except ValueError:
            pass
    if value is None and (ra := headers.get("retry-after")):
        try:
            value = float(ra)
        except ValueError:
            try:
                value = email.utils.parsedate_to_datetime(ra).timestamp() - time.time()
            except (TypeError, ValueError):
                return None
    return max(value, 0.0) if value is not None and math.isfinite(value) else None


# ---------------------------------------------------------------- secrets

_BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+")
_KEYLIKE_RE = re.compile(r"\b(sk)-[A-Za-z0-9_\-]{12,}")


def redact(text: str, secret: str | None) -> str:
    """``text`` with the key (verbatim or JSON-escaped), any ``Bearer <token>`` and sk-... key-like strings masked.
    Every message the client produces passes through here."""
    if secret:
        forms = {secret, json.dumps(secret)[1:-1]}
        for form in sorted(forms, key=len, reverse=True):
            if len(form) >= 6:
                text = text.replace(form, "***")
            else:  # a short key (a placeholder such as "x"): only whole words, so messages stay readable
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", "***", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} ***", text)
    return _KEYLIKE_RE.sub(lambda m: f"{m.group(1)}-***", text)


def estimate_tokens(text: str) -> int:
    """~4 characters per token: only feeds the tokens/min limiter, so being roughly right is enough."""
    return math.ceil(len(text) / 4)


# ---------------------------------------------------------------- rate limiting


class RatePacer:
    """Leaky bucket as GCRA: `per_minute` units per minute with bursts of up to `burst` units.

    Each acquire reserves its slot at once (first come, first served) and sleeps until the slot; a request larger
    than the burst simply waits longer. A cancelled waiter keeps its reservation, which only errs on the safe side.
    """

    def __init__(self, per_minute: float, burst: float):
        self.interval = 60.0 / per_minute  # seconds per unit
        self.tolerance = burst * self.interval  # how far ahead of schedule a burst may run
        self._tat = 0.0  # theoretical arrival time of the next unit (time.monotonic clock)
        self._lock = threading.Lock()

    def reserve(self, amount: float = 1.0) -> float:
        """Reserve `amount` units; return how many seconds to wait before using them."""
        with self._lock:
            now = time.monotonic()
            self._tat = max(self._tat, now) + amount * self.interval
            return max(0.0, self._tat - self.tolerance - now)

    async def acquire(self, amount: float = 1.0) -> None:
        if (delay := self.reserve(amount)) > 0:
            await asyncio.sleep(delay)


# ---------------------------------------------------------------- client

@dataclass
class _LoopState:
    """What is bound to one event loop (httpx pool, semaphore); rebuilt if the loop changes, so the same client
    works across successive asyncio.run() calls. Rate pacers live on the client and carry over."""
    loop: asyncio.AbstractEventLoop
    client: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore
    closer: Any = None
    check_lock: asyncio.Lock | None = None  # serialises the endpoint check among this loop's first calls


async def _close_at_loop_shutdown(client: openai.AsyncOpenAI) -> Any:
    """An async generator left suspended: asyncio.run() finalises open generators (loop.shutdown_asyncgens) while
    the loop still runs, so the finally closes the connection pool cleanly. Without it, the SDK's client, once
    garbage-collected, schedules its close on the *next* loop and logs 'Event loop is closed' errors."""
    try:
        yield
    finally:
        await client.close()


class LLMClient:
    def __init__(self, config: RoleConfig, *, cache: ResponseCache | None = None, ledger: Ledger | None = None):
        self.cfg = config
        self._api_key = config.resolve_api_key()  # fails here, naming the env var, if a remote key is missing
        self.cache = cache if cache is not None else (ResponseCache(config.cache_dir) if config.cache_dir else None)
        if self.cache is not None:
            try:  # one scan of the cache's temp folder: leftovers of writers killed over an hour ago
                self.cache.remove_stale_temp_files()
            except OSError as e:  # housekeeping only (a read-only cache still serves hits)
                log.debug("could not clean the cache's temp files: %s", e)
        # How long another process's claim on a key counts as alive without a touch. The holder touches it every
        # third of this while its call runs (queueing, retries and backoff included), so it only has to outlast a
        # stalled event loop; tied to the request timeout, the role's own bound on a stall.
        self.claim_ttl_s = float(config.timeout_s) + 10.0
        self._inflight: dict[str, asyncio.Future[Any]] = {}  # cache key -> outcome of this client's request for it
        self.ledger = ledger if ledger is not None else Ledger()
        self._backoff = wait_random_exponential(multiplier=config.backoff_initial_s, max=config.backoff_max_s)
        self._loop_state: _LoopState | None = None
        rpm, tpm = config.requests_per_minute, config.tokens_per_minute
        # Requests evenly spaced (burst of one): providers enforce RPM over sub-minute windows.
        self._rpm = RatePacer(rpm, burst=1) if rpm else None
        # Tokens: a one-minute burst (the provider's own window), since one request may be thousands of tokens.
        self._tpm = RatePacer(tpm, burst=tpm) if tpm else None
        self._endpoint_checked = False  # once per client, before its first request (never for cache hits)
        self._endpoint_failure: EndpointError | None = None
        self._progress: Progress | None = None

    @classmethod
    def from_config(cls, role: str, config: dict[str, Any], **kwargs: Any) -> "LLMClient":
        return cls(RoleConfig.from_dict(role, config), **kwargs)

    def __repr__(self) -> str:
        return f"LLMClient(role={self.cfg.role!r}, model={self.cfg.model!r}, endpoint={self.cfg.base_url!r})"

    # ------------------------------------------------------------ progress

    def start_progress(self, total: int, what: str, interval_s: float = 5.0) -> Progress:
        """Log ``what: k/total calls (c cached, f failed), r calls/s, ETA t`` (logger autointerp.llm.progress, INFO)
        at most every ``interval_s`` seconds as calls finish, and once when k reaches total. Replaces any earlier
        progress of this client."""
        if self._progress is not None:
            self._progress.finish()
        self._progress = Progress(total, what, interval_s, heartbeat=True)
        return self._progress

    def finish_progress(self) -> None:
        """Log the final line if it was not logged yet (fewer calls than expected) and stop counting."""
        if self._progress is not None:
            self._progress.finish()
            self._progress = None

    async def aclose(self) -> None:
        if self._loop_state is not None:
            await self._loop_state.closer.aclose()  # runs its finally: closes the client
            self._loop_state = None

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ operations

    async def chat(self, messages: Sequence[dict[str, Any]], *, temperature: float, top_p: float, max_tokens: int,
                   seed: int | None = None, logprobs: bool = False, top_logprobs: int | None = None,
                   sample_index: int = 0) -> ChatResult:
        messages = [dict(m) for m in messages]
        # Normalised numbers: temperature=0 and 0.0 must be one cache entry.
        temperature, top_p, max_tokens = float(temperature), float(top_p), int(max_tokens)
        seed = None if seed is None else int(seed)
        top_logprobs = None if top_logprobs is None else int(top_logprobs)
        params = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed,
                  "logprobs": bool(logprobs), "top_logprobs": top_logprobs if logprobs else None}
        # sample_index is only key material: n samples at temperature 1 must be n distinct cache entries.
        material = self._material("chat", messages=messages, params=params, sample_index=int(sample_index))
        est = sum(estimate_tokens(str(m.get("content", ""))) + 4 for m in messages) + max_tokens

        async def send(oa: openai.AsyncOpenAI) -> dict[str, Any]:
            kw: dict[str, Any] = {"model": self.cfg.model, "messages": messages, "temperature": temperature,
                                  "top_p": top_p, "max_tokens": max_tokens}
            if seed is not None:
                kw["seed"] = seed
            if logprobs:
                kw["logprobs"] = True
                if top_logprobs is not None:
                    kw["top_logprobs"] = top_logprobs
            return _parsed(_parse_chat, await _post(oa, "/chat/completions", kw))

        return await self._call("chat", material, est, send, ChatResult)

    async def completion_echo_logprobs(self, prompt: str, *, top_logprobs: int = 15,
                                       from_offset: int = 0) -> EchoLogprobsResult:
        """Per-position top logprobs of the prompt itself (legacy /v1/completions, echo=True, max_tokens=0), for the
        tokens that start at or after character ``from_offset`` (the rest are dropped before caching).

        ``from_offset`` is not part of the cache key: the request is the same. An entry kept from a later offset
        than asked for cannot serve the call, so it is fetched again (and stored from the earlier offset)."""
        if not 0 <= from_offset <= len(prompt):
            raise ValueError(f"from_offset {from_offset} is outside the prompt (0..{len(prompt)})")
        material = self._material("completion_echo_logprobs", prompt=prompt, params={"top_logprobs": top_logprobs})

        async def send(oa: openai.AsyncOpenAI) -> dict[str, Any]:
            body = {"model": self.cfg.model, "prompt": prompt, "echo": True, "max_tokens": 0, "logprobs": top_logprobs}
            return _parsed(_parse_echo, await _post(oa, "/completions", body), prompt, from_offset)

        def serves(data: Mapping[str, Any]) -> bool:
            return int(data.get("from_offset", 0)) <= from_offset

        result = await self._call("completion_echo_logprobs", material, estimate_tokens(prompt), send,
                                  EchoLogprobsResult, serves=serves)
        return result if result.from_offset == from_offset else _echo_from(result, from_offset)

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        texts = list(texts)
        material = self._material("embed", input=texts)

        async def send(oa: openai.AsyncOpenAI) -> dict[str, Any]:
            # "float" explicitly: the SDK defaults to base64, which not every local server implements.
            body = _parsed(_parse_embed, await _post(
                oa, "/embeddings", {"model": self.cfg.model, "input": texts, "encoding_format": "float"}))
            if len(body["vectors"]) != len(texts):
                raise MalformedResponseError(f"{len(body['vectors'])} embeddings for {len(texts)} inputs")
            return body

        return await self._call("embed", material, sum(estimate_tokens(t) for t in texts), send, EmbedResult)

    # ------------------------------------------------------------ machinery

    def _material(self, op: str, **payload: Any) -> dict[str, Any]:
        # Everything that determines the answer; deliberately no role, key, timeout or retry settings.
        return {"endpoint": self.cfg.endpoint_id, "model": self.cfg.model, "op": op, **payload}

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._loop_state
        if st is None or st.loop is not loop:
            c = self.cfg
            client = openai.AsyncOpenAI(api_key=self._api_key, base_url=c.base_url, timeout=c.timeout_s,
                                        max_retries=0)
            st = _LoopState(loop=loop, client=client, semaphore=asyncio.Semaphore(c.concurrency),
                            closer=_close_at_loop_shutdown(client), check_lock=asyncio.Lock())
            await st.closer.__anext__()
            if self._loop_state is None or self._loop_state.loop is not loop:  # no other task got here first
                self._loop_state = st
            else:
                await st.closer.aclose()
        return self._loop_state

    def _wait(self, rs: RetryCallState) -> float:
        hint = retry_after_s(rs.outcome.exception() if rs.outcome else None)
        if hint is None:
            return self._backoff(rs)
        hint = min(hint, self.cfg.max_retry_after_s)
        return hint + random.uniform(0, 0.1 * hint)  # jitter: clients told the same time must not stampede

    # ------------------------------------------------------------ endpoint check

    async def _ensure_endpoint(self, st: _LoopState) -> None:
        """The endpoint check, once per client, before its first request; concurrent first calls wait for the one
        check, and if it failed every call raises (a copy of) its EndpointError at once."""
        if not self._endpoint_checked:
            assert st.check_lock is not None
            async with st.check_lock:
                if not self._endpoint_checked:
                    self._endpoint_failure = await self._check_endpoint(st.client)
                    self._endpoint_checked = True
        if self._endpoint_failure is not None:
            raise self._endpoint_failure.copy() from None

    async def _check_endpoint(self, oa: openai.AsyncOpenAI) -> EndpointError | None:
        """``GET {base_url}/models`` (short timeout, no retries): the error that makes this endpoint unusable, or
        None. Servers that do not list models, and transient trouble (5xx, left to the retries), pass."""
        c = self.cfg
        role, url, model = c.role, str(c.base_url), c.model

        def fail(what: str, status: int | None = None) -> EndpointError:
            return EndpointError(self._redact(f"role {role}: {what}"), role=role, model=model, endpoint=url,
                                 status=status)

        # At least 3 s whatever the role's timeout_s: a loaded machine can take longer than a short request
        # timeout to answer a listing, and a check that fails a healthy endpoint ends the whole job.
        timeout = min(10.0, max(3.0, float(c.timeout_s)))
        failure: EndpointError | None = None
        status: int | None = None
        body: Any = None
        try:
            raw = await oa.get("/models", cast_to=_httpx.Response, options={"timeout": timeout, "max_retries": 0})
            status = raw.status_code
            try:
                body = json.loads(raw.content)
            except ValueError:
                body = None
        except openai.APITimeoutError:
            failure = fail(f"endpoint not reachable at {url} (no answer within {timeout:g} s); start the server or "
                           "fix base_url for this role in the config")
        except openai.APIConnectionError as e:
            failure = fail(f"endpoint not reachable at {url} ({self._short_reason(e)}); start the server or fix "
                           "base_url for this role in the config")
        except openai.APIStatusError as e:
            status = e.status_code
        except Exception as e:  # noqa: BLE001 - the check is a convenience: never the reason a job fails
            log.warning("role %s: could not check the endpoint %s (%s); going on", role, url,
                        self._redact(f"{type(e).__name__}: {e}")[:200])
            return None
        if failure is not None:
            return failure
        if status in (401, 403):
            source = f"from ${c.api_key_env}" if c.api_key_env else "(api_key_env is null: a placeholder key was sent)"
            return fail(f"{url} rejected the API key {source} (HTTP {status})", status)
        if status is not None and 200 <= status < 300:
            served = _served_models(body)
            if not served:  # not a list, or an empty one (proxies that route any name list nothing)
                log.info("role %s: %s/models lists no models; not checking that it serves %s", role, url, model)
                return None
            if _serves(served, model):
                log.debug("role %s: %s serves %s", role, url, model)
                return None
            listed = difflib.get_close_matches(model, served, n=3, cutoff=0.5)
            listed += [m for m in sorted(served) if m not in listed]
            more = ", ..." if len(listed) > 8 else ""
            return fail(f"model {model} not served by {url} (served: {', '.join(listed[:8])}{more})", status)
        if status in (404, 405, 501):
            log.info("role %s: %s does not list its models (HTTP %s); not checking that it serves %s",
                     role, url, status, model)
        else:
            log.warning("role %s: %s/models answered HTTP %s; going on (calls are retried)", role, url, status)
        return None

    def _short_reason(self, exc: BaseException) -> str:
        """What went wrong under the SDK's generic 'Connection error.': the transport error's own message."""
        chain: list[BaseException] = []
        e: BaseException | None = exc
        while e is not None and len(chain) < 12 and e not in chain:
            chain.append(e)
            e = e.__cause__ or e.__context__
        os_errors = [x for x in chain if isinstance(x, OSError) and x.errno is not None]
        if os_errors:  # the socket's own words: "Connection refused", "Name or service not known"
            deepest = os_errors[-1]
            no = deepest.errno
            text = os.strerror(no) if isinstance(no, int) and no > 0 else (deepest.strerror or str(deepest))
        else:
            cause = chain[1] if len(chain) > 1 else exc
            text = str(cause).strip() or type(cause).__name__
        return self._redact(str(text).splitlines()[0] if str(text).strip() else type(exc).__name__)[:160]

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    # ------------------------------------------------------------ requests

    async def _send_with_retries(self, op: str, est_tokens: int,
                                 send: Callable[[openai.AsyncOpenAI], Awaitable[dict]]) -> tuple[dict[str, Any], int]:
        st = await self._state()
        await self._ensure_endpoint(st)
        attempts = 0
        data: dict[str, Any] = {}
        failure: LLMRequestError | None = None
        try:
            # Backoff sleeps happen outside the semaphore, so other requests use the slot meanwhile.
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.cfg.max_retries + 1), wait=self._wait,
                                               retry=retry_if_exception(is_retryable), reraise=True):
                with attempt:
                    attempts += 1
                    async with st.semaphore:
                        if self._rpm:
                            await self._rpm.acquire()
                        if self._tpm:
                            await self._tpm.acquire(est_tokens)
                        data = await send(st.client)
        except (openai.OpenAIError, MalformedResponseError) as e:
            failure = self._error(op, e, attempts)
        if failure is not None:
            # Raised outside the except block and without a cause: the SDK's exception (whose message and
            # response may echo the request's Authorization header) must not reach a printed traceback.
            raise failure from None
        return data, attempts

    def _error(self, op: str, exc: BaseException, attempts: int) -> LLMRequestError:
        status = getattr(exc, "status_code", None)
        retryable = is_retryable(exc)
        detail = self._redact(str(getattr(exc, "message", None) or exc))[:500]
        how = f"gave up after {attempts} attempts" if retryable else "not retryable"
        what = f"HTTP {status}" if status else type(exc).__name__
        return LLMRequestError(self._redact(
            f"{op} failed for role={self.cfg.role} model={self.cfg.model} endpoint={self.cfg.base_url}: "
            f"{how}: {what}: {detail}"),
            role=self.cfg.role, model=self.cfg.model, endpoint=str(self.cfg.base_url), status=status,
            retryable=retryable, attempts=attempts)

    async def _call(self, op: str, material: dict[str, Any], est_tokens: int,
                    send: Callable[[openai.AsyncOpenAI], Awaitable[dict]], result_cls: type[LLMResult],
                    serves: Callable[[Mapping[str, Any]], bool] | None = None) -> Any:
        """One call through cache, claims and retries. ``serves``: can a stored answer (or that of an identical call
        in flight) serve this call? (None: any can.)"""
        key = cache_key(material)
        t0 = time.perf_counter()
        if self.cache is None:
            return await self._fetch(op, key, material, est_tokens, send, result_cls, t0, serves)
        loop = asyncio.get_running_loop()
        while True:
            if (data := await asyncio.to_thread(self.cache.get, key)) is not None and \
                    (hit := self._hit(op, key, data, t0, result_cls, serves)) is not None:
                return hit
            shared = self._inflight.get(key)
            if shared is None or shared.get_loop() is not loop:
                break
            # An identical call of this client is in flight: share its outcome. Its answer is a cache hit for us
            # (no request, no cost); its failure is ours too (the same request under the same retry policy).
            # shield: our own cancellation must not cancel the future the others wait on.
            outcome = await asyncio.shield(shared)
            latency = time.perf_counter() - t0
            if isinstance(outcome, LLMResult) and serves is not None and not serves(vars(outcome)):
                break  # its answer is cut short for us: ask ourselves (and store the longer one)
            if isinstance(outcome, LLMResult):
                self._record(op, key, outcome.usage, latency, True, 0, None)
                return dataclasses.replace(outcome, latency_s=latency, cache_hit=True, attempts=0)
            if isinstance(outcome, (LLMRequestError, EndpointError)):
                self._record(op, key, Usage(), latency, False, 0, str(outcome))
                raise outcome.copy() from None
            # None: the call we waited on was cancelled or broke otherwise; look again, and lead if still a miss.
        future: asyncio.Future[Any] = loop.create_future()
        self._inflight[key] = future
        outcome = None
        try:
            outcome = await self._fetch(op, key, material, est_tokens, send, result_cls, t0, serves)
            return outcome
        except (LLMRequestError, EndpointError) as e:
            outcome = e
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
            future.set_result(outcome)

    def _hit(self, op: str, key: str, data: dict[str, Any], t0: float, result_cls: type[LLMResult],
             serves: Callable[[Mapping[str, Any]], bool] | None) -> Any:
        if serves is not None and not serves(data):
            return None  # stored, but cut short for this call: refetch and overwrite
        try:
            return self._result(op, key, data, t0, True, 0, result_cls)
        except (TypeError, ValueError):
            return None  # an entry of another shape (older code): refetch and overwrite

    async def _fetch(self, op: str, key: str, material: dict[str, Any], est_tokens: int,
                     send: Callable[[openai.AsyncOpenAI], Awaitable[dict]], result_cls: type[LLMResult],
                     t0: float, serves: Callable[[Mapping[str, Any]], bool] | None) -> Any:
        """Send the request and store a success; with a cache, only while holding the key's claim."""
        cache = self.cache
        if cache is not None and (hit := await self._claim_or_hit(op, key, t0, result_cls, serves)) is not None:
            return hit
        try:
            work = self._send_with_retries(op, est_tokens, send)
            data, attempts = await (work if cache is None else self._holding_claim(key, work))
            if cache is not None:  # only successes are stored
                await asyncio.to_thread(cache.put, key, material, data)
        except (LLMRequestError, EndpointError) as e:
            self._record(op, key, Usage(), time.perf_counter() - t0, False, getattr(e, "attempts", 0),
                         self._redact(str(e)))
            raise
        finally:
            if cache is not None:  # after the put, so a waiter that finds the claim gone finds the entry
                cache.release_claim(key)  # one unlink, not in a thread: it must run when we are cancelled too
        return self._result(op, key, data, t0, False, attempts, result_cls)

    async def _claim_or_hit(self, op: str, key: str, t0: float, result_cls: type[LLMResult],
                            serves: Callable[[Mapping[str, Any]], bool] | None) -> Any:
        """None once this process holds the claim on `key` (and the entry is still missing), or a hit: the answer
        another process stored while we waited for its claim to go. A holder that failed stores nothing and
        releases its claim, so the waiter then claims and sends itself."""
        assert self.cache is not None
        cache, ttl = self.cache, self.claim_ttl_s
        seen: tuple[float, float] | None = None  # the holder's claim mtime, and when (our clock) we first saw it
        delay = _CLAIM_POLL_S[0]

        def look(stale: float | None) -> tuple[float | None, dict[str, Any] | None]:
            # Look for the entry even when we claimed: the last holder may have stored it since our miss.
            return cache.try_claim(key, ttl, stale), cache.get(key)

        while True:
            mtime, data = await asyncio.to_thread(
                look, seen[0] if seen is not None and time.monotonic() - seen[1] > ttl else None)
            if data is not None and (hit := self._hit(op, key, data, t0, result_cls, serves)) is not None:
                if mtime is None:
                    cache.release_claim(key)
                return hit
            if mtime is None:
                return None
            if seen is None or seen[0] != mtime:
                seen = (mtime, time.monotonic())
            await asyncio.sleep(delay)
            delay = min(2 * delay, _CLAIM_POLL_S[1])

    async def _holding_claim(self, key: str, work: Awaitable[_T]) -> _T:
        """Await `work` while touching the key's claim every third of its TTL, so other processes see a live
        holder however long the request queues, retries or backs off (and a killed holder's claim expires)."""
        assert self.cache is not None
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.claim_ttl_s / 3)
                if done:
                    return task.result()
                await asyncio.to_thread(self.cache.touch_claim, key)
        finally:
            task.cancel()  # a no-op once done; stops the request when we are cancelled

    def _result(self, op: str, key: str, data: dict[str, Any], t0: float, hit: bool, attempts: int,
                result_cls: type[LLMResult]) -> Any:
        usage = Usage(**data.get("usage", {}))
        fields = {k: v for k, v in data.items() if k != "usage"}
        latency = time.perf_counter() - t0
        result = result_cls(usage=usage, latency_s=latency, cache_key=key, cache_hit=hit, attempts=attempts, **fields)
        self._record(op, key, usage, latency, hit, attempts, None)
        return result

    def _record(self, op: str, key: str, usage: Usage, latency: float, hit: bool, attempts: int,
                error: str | None) -> None:
        cost = 0.0 if hit or error else estimate_cost(usage.prompt_tokens, usage.completion_tokens,
                                                      self.cfg.price_input_per_1m, self.cfg.price_output_per_1m)
        self.ledger.record(UsageRecord(
            role=self.cfg.role, model=self.cfg.model, operation=op, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, latency_s=latency, cache_hit=hit, attempts=attempts,
            cost_usd=cost, cache_key=key, timestamp=time.time(), error=error))
        if self._progress is not None:
            self._progress.tick(cached=hit, failed=error is not None)


def _served_models(body: Any) -> list[str] | None:
    """The ids of an OpenAI-shaped model list (``{"data": [{"id": ...}, ...]}``), or None for anything else."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        return None
    return [m["id"] for m in data]


def _serves(served: Iterable[str], model: str) -> bool:
    """Whether a listed id names the configured model, allowing the spellings servers use for the same model:
    case, a path prefix ("models/gemini-2.0-flash", "org/model"), Ollama's implicit ":latest" tag."""
    want = model.strip().lower()
    want_bare = want.removesuffix(":latest")
    for sid in served:
        s = sid.strip().lower()
        if s == want or s.removesuffix(":latest") == want_bare:
            return True
        if s.rsplit("/", 1)[-1] == want or want.rsplit("/", 1)[-1] == s:
            return True
    return False


def make_clients(llm_config: dict[str, dict[str, Any]], *, roles: Iterable[str] | None = None,
                 ledger: Ledger | None = None) -> dict[str, LLMClient]:
    """Clients for the given roles (default: all in the config) sharing one ledger."""
    ledger = ledger if ledger is not None else Ledger()
    return {r: LLMClient.from_config(r, llm_config[r], ledger=ledger) for r in (roles or llm_config)}


async def run_many(requests: Iterable[Awaitable[Any] | Callable[[], Awaitable[Any]]], *,
                   concurrency: int = 64) -> list[Any]:
    """Await many requests with at most `concurrency` pending; results in input order, and an item that raised
    gives its exception object in its place. Pass callables to defer creating coroutines until a slot is free."""
    sem = asyncio.Semaphore(concurrency)

    async def one(item: Awaitable[Any] | Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            try:
                return await (item() if callable(item) else item)
            except Exception as e:  # noqa: BLE001 - per-item capture is the point
                return e

    return list(await asyncio.gather(*(one(i) for i in requests)))
