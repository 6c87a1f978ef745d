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
import email.utils
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Sequence

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

try:  # the HTTP library the installed openai SDK is built on
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx as _httpx  # type: ignore[no-redef]

from autointerp.llm.cache import ResponseCache, cache_key
from autointerp.llm.config import RoleConfig
from autointerp.llm.ledger import Ledger, UsageRecord, estimate_cost


class LLMError(Exception):
    pass


class LLMRequestError(LLMError):
    """A call failed for good; the message names role, model and endpoint (never the key)."""

    def __init__(self, message: str, *, role: str, model: str, endpoint: str, status: int | None,
                 retryable: bool, attempts: int):
        super().__init__(message)
        self.role, self.model, self.endpoint = role, model, endpoint
        self.status, self.retryable, self.attempts = status, retryable, attempts


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


def _parse_echo(body: dict[str, Any], prompt: str) -> dict[str, Any]:
    lp = body["choices"][0]["logprobs"]
    tokens, offsets = list(lp["tokens"]), [int(o) for o in lp["text_offset"]]
    token_lps = [None if v is None else float(v) for v in lp["token_logprobs"]]
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    if not (len(tokens) == len(offsets) == len(token_lps) == len(tops)):
        raise ValueError("logprobs arrays differ in length")
    # Keep prompt positions only: some servers (llama-cpp-python) generate despite max_tokens=0.
    n = sum(1 for o in offsets if o < len(prompt))
    return {"tokens": tokens[:n], "text_offsets": offsets[:n], "token_logprobs": token_lps[:n],
            "top_logprobs": [_top_dict(t) for t in tops[:n]], "usage": _usage(body)}


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
        raise MalformedResponseError(f"response is not JSON: {e}") from e
    if not isinstance(out, dict):
        raise MalformedResponseError("response JSON is not an object")
    return out


def _parsed(parse: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    try:
        return parse(*args)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise MalformedResponseError(f"unexpected response shape: {type(e).__name__}: {e}") from e


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
        self.ledger = ledger if ledger is not None else Ledger()
        self._backoff = wait_random_exponential(multiplier=config.backoff_initial_s, max=config.backoff_max_s)
        self._loop_state: _LoopState | None = None
        rpm, tpm = config.requests_per_minute, config.tokens_per_minute
        # Requests evenly spaced (burst of one): providers enforce RPM over sub-minute windows.
        self._rpm = RatePacer(rpm, burst=1) if rpm else None
        # Tokens: a one-minute burst (the provider's own window), since one request may be thousands of tokens.
        self._tpm = RatePacer(tpm, burst=tpm) if tpm else None

    @classmethod
    def from_config(cls, role: str, config: dict[str, Any], **kwargs: Any) -> "LLMClient":
        return cls(RoleConfig.from_dict(role, config), **kwargs)

    def __repr__(self) -> str:
        return f"LLMClient(role={self.cfg.role!r}, model={self.cfg.model!r}, endpoint={self.cfg.base_url!r})"

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

    async def completion_echo_logprobs(self, prompt: str, *, top_logprobs: int = 15) -> EchoLogprobsResult:
        """Per-position top logprobs of the prompt itself (legacy /v1/completions, echo=True, max_tokens=0)."""
        material = self._material("completion_echo_logprobs", prompt=prompt, params={"top_logprobs": top_logprobs})

        async def send(oa: openai.AsyncOpenAI) -> dict[str, Any]:
            body = {"model": self.cfg.model, "prompt": prompt, "echo": True, "max_tokens": 0, "logprobs": top_logprobs}
            return _parsed(_parse_echo, await _post(oa, "/completions", body), prompt)

        return await self._call("completion_echo_logprobs", material, estimate_tokens(prompt), send,
                                EchoLogprobsResult)

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
                            closer=_close_at_loop_shutdown(client))
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

    async def _send_with_retries(self, op: str, est_tokens: int,
                                 send: Callable[[openai.AsyncOpenAI], Awaitable[dict]]) -> tuple[dict[str, Any], int]:
        st = await self._state()
        attempts = 0
        data: dict[str, Any] = {}
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
            raise self._error(op, e, attempts) from e
        return data, attempts

    def _error(self, op: str, exc: BaseException, attempts: int) -> LLMRequestError:
        status = getattr(exc, "status_code", None)
        retryable = is_retryable(exc)
        detail = str(getattr(exc, "message", None) or exc).replace(self._api_key, "***")[:500]
        how = f"gave up after {attempts} attempts" if retryable else "not retryable"
        what = f"HTTP {status}" if status else type(exc).__name__
        return LLMRequestError(
            f"{op} failed for role={self.cfg.role} model={self.cfg.model} endpoint={self.cfg.base_url}: "
            f"{how}: {what}: {detail}",
            role=self.cfg.role, model=self.cfg.model, endpoint=str(self.cfg.base_url), status=status,
            retryable=retryable, attempts=attempts)

    async def _call(self, op: str, material: dict[str, Any], est_tokens: int,
                    send: Callable[[openai.AsyncOpenAI], Awaitable[dict]], result_cls: type[LLMResult]) -> Any:
        key = cache_key(material)
        t0 = time.perf_counter()
        if self.cache is not None and (data := await asyncio.to_thread(self.cache.get, key)) is not None:
            try:
                return self._result(op, key, data, t0, True, 0, result_cls)
            except (TypeError, ValueError):
                pass  # an entry of another shape (older code): refetch and overwrite
        try:
            data, attempts = await self._send_with_retries(op, est_tokens, send)
        except LLMRequestError as e:
            self._record(op, key, Usage(), time.perf_counter() - t0, False, e.attempts, str(e))
            raise
        if self.cache is not None:  # only successes are stored
            await asyncio.to_thread(self.cache.put, key, material, data)
        return self._result(op, key, data, t0, False, attempts, result_cls)

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
