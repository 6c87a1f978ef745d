"""LLM client: config, operations, concurrency, retries, fail-fast errors, rate limits, ledger."""

import asyncio
import json
import logging
import math
import socket
import time

import pytest

from autointerp.llm import (
    ChatResult,
    EndpointError,
    LLMClient,
    LLMConfigError,
    LLMError,
    LLMRequestError,
    Progress,
    RoleConfig,
    estimate_cost,
    estimate_tokens,
    run_many,
)

CHAT = "/v1/chat/completions"
MSG = [{"role": "system", "content": "You explain neurons."}, {"role": "user", "content": "Explain neuron 7."}]


def chat(client, content="Explain neuron 7.", **kw):
    kw = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 32, **kw}
    return client.chat([{"role": "user", "content": content}], **kw)


def timed(coro):
    t0 = time.perf_counter()
    out = asyncio.run(coro)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------- config


def test_config_defaults_validation_and_extra_keys():
    cfg = RoleConfig.from_dict("explainer", {"model": "gpt-4o-mini", "temperature": 1.0})
    assert cfg.provider == "openai" and cfg.base_url == "https://api.openai.com/v1"
    assert cfg.api_key_env == "OPENAI_API_KEY" and cfg.concurrency == 8 and cfg.max_retries == 6
    assert cfg.cache_dir == ".cache/llm" and cfg.extra == {"temperature": 1.0}
    with pytest.raises(LLMConfigError, match="model"):
        RoleConfig.from_dict("simulator", {"provider": "openai"})
    with pytest.raises(LLMConfigError, match="provider"):
        RoleConfig.from_dict("simulator", {"model": "m", "provider": "anthropic"})
    with pytest.raises(LLMConfigError, match="base_url"):
        RoleConfig.from_dict("simulator", {"model": "m", "provider": "local"})
    with pytest.raises(LLMConfigError, match="concurrency"):
        RoleConfig.from_dict("simulator", {"model": "m", "concurrency": 0})


def test_missing_remote_key_fails_at_construction_naming_the_variable(monkeypatch):
    monkeypatch.delenv("AUTOINTERP_MISSING_KEY", raising=False)
    with pytest.raises(LLMConfigError, match="AUTOINTERP_MISSING_KEY"):
        LLMClient.from_config("explainer", {"model": "m", "base_url": "https://llm.example.invalid/v1",
                                            "api_key_env": "AUTOINTERP_MISSING_KEY"})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        LLMClient.from_config("explainer", {"model": "gpt-4o-mini"})


def test_local_provider_needs_no_key(loopback, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = LLMClient.from_config("simulator", {"provider": "local", "model": "smollm2", "base_url": loopback.base_url,
                                                 "cache_dir": str(tmp_path / "c")})
    assert asyncio.run(chat(client)).text.startswith("reply")
    assert loopback.requests[0].headers["authorization"].startswith("Bearer ")


# ---------------------------------------------------------------- operations


def test_chat_echo_and_embed_results(make_client, loopback):
    client = make_client()
    prompt = "The cat sat on\nthe  mat."

    async def go():
        return (await client.chat(MSG, temperature=0.0, top_p=1.0, max_tokens=32, logprobs=True, top_logprobs=5),
                await client.completion_echo_logprobs(prompt),
                await client.embed(["alpha", "beta", "alpha"]))

    c, e, m = asyncio.run(go())
    assert isinstance(c, ChatResult) and c.text.endswith("Explain neuron 7.") and c.finish_reason == "stop"
    assert c.usage.completion_tokens == len(c.logprobs) > 0 and all(len(t["top_logprobs"]) == 5 for t in c.logprobs)
    assert not c.cache_hit and c.attempts == 1 and c.latency_s > 0 and len(c.cache_key) == 64
    sent = loopback.requests[0].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5 and sent["max_tokens"] == 32

    assert "".join(e.tokens) == prompt
    assert e.text_offsets == [prompt.index(t, o) for t, o in zip(e.tokens, e.text_offsets)]
    assert e.top_logprobs[0] == {} and all(len(t) == 15 for t in e.top_logprobs[1:])
    assert all(tl[tok] == lp for tok, lp, tl in zip(e.tokens[1:], e.token_logprobs[1:], e.top_logprobs[1:]))
    echo_req = loopback.requests[1].body
    assert (echo_req["echo"], echo_req["max_tokens"], echo_req["logprobs"]) == (True, 0, 15)

    assert len(m.vectors) == 3 and m.vectors[0] == m.vectors[2] != m.vectors[1]
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in m.vectors)


def test_client_works_across_successive_event_loops(make_client):
    client = make_client(cache_dir=None)
    assert asyncio.run(chat(client, "a")).text != asyncio.run(chat(client, "b")).text


# ---------------------------------------------------------------- concurrency and rate limits


def test_concurrency_actually_overlaps_and_is_bounded(make_client, loopback):
    loopback.latency = 0.2
    client = make_client(concurrency=8)
    results, wall = timed(run_many([chat(client, f"n{i}") for i in range(16)]))
    assert all(isinstance(r, ChatResult) for r in results)
    assert 2 * 0.2 * 0.95 <= wall < 16 * 0.2 / 4  # two waves of 8, not 16 in series, not all 16 at once
    assert loopback.max_in_flight == 8


def test_requests_per_minute_is_honoured(make_client, loopback):
    client = make_client(requests_per_minute=120, concurrency=5)  # one request per 0.5 s
    _, wall = timed(run_many([chat(client, f"n{i}") for i in range(5)]))
    assert 1.8 <= wall < 4.0
    gaps = [b.t - a.t for a, b in zip(loopback.requests, loopback.requests[1:])]
    assert min(gaps) > 0.4


def test_tokens_per_minute_is_honoured(make_client):
    # One-minute bucket of 30,000 tokens draining at 500 tokens/s: 30 requests of ~1,000 tokens pass at once,
    # the 31st waits until ~2 s after the bucket emptied. Measured from the burst's start: the bucket refills
    # while the burst runs, so on a loaded machine a slow burst shortens the 31st's own wait by as much.
    client = make_client(tokens_per_minute=30_000, concurrency=64)
    max_tokens = 1000 - estimate_tokens("x0000000") - 4
    assert max_tokens == 994
    _, burst = timed(run_many([chat(client, f"x{i:07d}", max_tokens=max_tokens) for i in range(30)]))
    assert burst < 1.0
    _, wall = timed(chat(client, "y0000000", max_tokens=max_tokens))
    assert 1.9 <= burst + wall and wall < 4.0


def test_run_many_keeps_order_and_captures_exceptions(make_client, loopback):
    loopback.script = lambda path, body: (400, {"error": {"message": "bad item"}}) \
        if "bad" in json.dumps(body) else None
    client = make_client()
    items = [chat(client, f"ok {i}") if i != 3 else chat(client, "bad 3") for i in range(6)]
    items.append(lambda: chat(client, "ok deferred"))  # callables are started lazily
    results = asyncio.run(run_many(items, concurrency=2))
    assert isinstance(results[3], LLMRequestError)
    assert [r.text.split(": ", 1)[1] for i, r in enumerate(results) if i != 3] == \
        [f"ok {i}" for i in (0, 1, 2, 4, 5)] + ["ok deferred"]


# ---------------------------------------------------------------- retries


def test_429_retry_after_is_honoured(make_client, loopback):
    loopback.add_faults("429", 2, retry_after=0.25)
    r, wall = timed(chat(make_client()))
    assert loopback.count(CHAT) == 3 and r.attempts == 3
    assert wall >= 0.5  # backoff alone would be <= 0.1 s (backoff_max_s=0.05)


def test_429_retry_after_ms_is_honoured(make_client, loopback):
    loopback.add_faults("429", 1, retry_after_ms=300, retry_after=30)  # -ms wins over the seconds header
    r, wall = timed(chat(make_client()))
    assert loopback.count(CHAT) == 2 and r.attempts == 2 and 0.3 <= wall < 5


@pytest.mark.parametrize("kind,opts", [("500", {}), ("malformed", {}), ("timeout", {"sleep": 2.0})])
def test_transient_failures_are_retried_then_succeed(make_client, loopback, kind, opts):
    loopback.add_faults(kind, 2, **opts)
    client = make_client(timeout_s=0.3)
    r = asyncio.run(chat(client))
    assert loopback.count(CHAT) == 3 and r.attempts == 3
    assert r.text == asyncio.run(chat(make_client(cache_dir=None))).text  # same answer as an undisturbed call
    assert client.ledger.totals()["requests"] == 1


def test_retries_exhausted_raise_with_context(make_client, loopback):
    loopback.add_faults("500", 3)
    client = make_client(max_retries=2)
    with pytest.raises(LLMRequestError, match="gave up after 3 attempts") as ei:
        asyncio.run(chat(client))
    assert loopback.count(CHAT) == 3 and ei.value.retryable and ei.value.status == 500
    assert client.ledger.totals()["errors"] == 1


def test_non_retryable_400_fails_fast_naming_role_model_endpoint(make_client, loopback):
    loopback.add_faults("400", 5)
    client = make_client(role="simulator", model="sim-model-x")
    with pytest.raises(LLMRequestError) as ei:
        asyncio.run(chat(client))
    msg = str(ei.value)
    assert loopback.count(CHAT) == 1 and ei.value.status == 400 and not ei.value.retryable
    assert "simulator" in msg and "sim-model-x" in msg and loopback.base_url in msg and "400" in msg


# ---------------------------------------------------------------- ledger


def test_ledger_totals_cost_and_jsonl(make_client, tmp_path):
    client = make_client(price_input_per_1m=2.0, price_output_per_1m=8.0)

    async def go():
        a = await chat(client, "one two three")
        b = await chat(client, "one two three")  # hit
        return a, b

    a, b = asyncio.run(go())
    t = client.ledger.totals()
    assert (t["calls"], t["cache_hits"], t["requests"]) == (2, 1, 1) and b.cache_hit and b.attempts == 0
    assert t["cost_usd"] == pytest.approx(estimate_cost(a.usage.prompt_tokens, a.usage.completion_tokens, 2.0, 8.0))
    assert t["prompt_tokens"] == 2 * a.usage.prompt_tokens and t["billed_prompt_tokens"] == a.usage.prompt_tokens
    assert t["by_role"]["explainer"]["calls"] == 2
    assert estimate_cost(1_000_000, 500_000, 2.5, 10.0) == pytest.approx(7.5)
    lines = client.ledger.write_jsonl(tmp_path / "ledger" / "usage.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["cache_hit"] for r in recs] == [False, True] and recs[0]["role"] == "explainer"
    assert recs[0]["model"] == "loop-model" and recs[0]["latency_s"] > 0


# ---------------------------------------------------------------- endpoint check before the first request

MODELS = "/v1/models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_endpoint_fails_every_call_fast_naming_the_url(make_client):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = make_client(base_url=url, max_retries=6, backoff_initial_s=2.0, backoff_max_s=30.0)
    results, wall = timed(run_many([chat(client, f"n{i}") for i in range(6)]))
    assert all(isinstance(r, EndpointError) for r in results), results
    assert wall < 8.0  # the retry budget (6 retries, backoff up to 30 s) would take far longer
    msg = str(results[0])
    assert msg.startswith("role explainer: endpoint not reachable at " + url) and "refused" in msg.lower()
    assert "start the server or fix base_url" in msg and "\n" not in msg
    assert {str(r) for r in results} == {msg}
    assert isinstance(results[0], LLMError) and isinstance(results[0], RuntimeError)
    t = client.ledger.totals()
    assert (t["calls"], t["errors"], t["attempts"]) == (6, 6, 0)
    from autointerp import known_errors

    assert isinstance(results[0], known_errors())


def test_endpoint_that_accepts_but_never_answers_times_out_as_unreachable(make_client):
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        client = make_client(base_url=url, timeout_s=0.5)
        t0 = time.perf_counter()
        with pytest.raises(EndpointError, match="not reachable at .*no answer within 3 s") as ei:
            asyncio.run(chat(client))  # the check waits 3 s at least, whatever the request timeout
        assert url in str(ei.value) and time.perf_counter() - t0 < 8.0


def test_model_not_listed_names_model_and_served_ids(make_client, loopback):
    loopback.models = ["zeta-model", "loop-modle", "alpha-model"]
    client = make_client()
    results = asyncio.run(run_many([chat(client, f"n{i}") for i in range(5)]))
    assert all(isinstance(r, EndpointError) for r in results)
    msg = str(results[0])
    assert msg.startswith(f"role explainer: model loop-model not served by {loopback.base_url} (served: ")
    assert "loop-modle" in msg and "alpha-model" in msg and "zeta-model" in msg
    assert msg.index("loop-modle") < msg.index("alpha-model")  # the near miss first
    assert loopback.count() == 0 and loopback.gets[MODELS] == 1  # one check, no request sent


def test_long_model_lists_are_cut_short(make_client, loopback):
    loopback.models = [f"m{i:02d}" for i in range(30)]
    with pytest.raises(EndpointError, match=r"\(served: m00, m01, .*m07, \.\.\.\)$"):
        asyncio.run(chat(make_client()))


@pytest.mark.parametrize("listed", [["other", "loop-model"], ["models/loop-model"], ["LOOP-MODEL"],
                                    ["loop-model:latest"]])
def test_listed_model_passes_the_check(make_client, loopback, listed):
    loopback.models = listed
    assert asyncio.run(chat(make_client())).text.startswith("reply")
    assert loopback.gets[MODELS] == 1


@pytest.mark.parametrize("status,level", [(404, logging.INFO), (405, logging.INFO), (501, logging.INFO),
                                          (200, logging.INFO), (503, logging.WARNING), (429, logging.WARNING)])
def test_servers_that_do_not_list_models_or_fail_the_check_still_work(make_client, loopback, caplog, status,
                                                                      level):
    loopback.models_status = status  # 200: a body that is not a model list
    caplog.set_level(logging.DEBUG, logger="autointerp.llm.client")
    client = make_client()
    assert asyncio.run(chat(client)).text.startswith("reply")
    assert loopback.count(CHAT) == 1 and loopback.gets[MODELS] == 1
    notes = [r for r in caplog.records if r.name == "autointerp.llm.client" and r.levelno >= logging.INFO]
    assert [r.levelno for r in notes] == [level] and loopback.base_url in notes[0].getMessage()


@pytest.mark.parametrize("models", [None, []])  # no model list (404), or an empty one
def test_servers_without_a_model_list_serve_any_model(make_client, loopback, models):
    loopback.models = models
    assert asyncio.run(chat(make_client(model="anything-at-all"))).text.startswith("reply")
    assert loopback.gets[MODELS] == 1


def test_rejected_key_names_the_env_var(make_client, loopback, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_TEST_REJECTED", "sk-rejected-0123456789abcdef")
    loopback.echo_key = 401
    client = make_client(api_key_env="AUTOINTERP_TEST_REJECTED")
    with pytest.raises(EndpointError) as ei:
        asyncio.run(chat(client))
    assert str(ei.value) == (f"role explainer: {loopback.base_url} rejected the API key from "
                             "$AUTOINTERP_TEST_REJECTED (HTTP 401)")
    assert ei.value.status == 401 and loopback.count() == 0


def test_cache_hits_never_touch_the_network(make_client, loopback):
    warm = make_client()
    first = asyncio.run(run_many([chat(warm, f"n{i}") for i in range(3)]))
    assert loopback.gets[MODELS] == 1
    client = make_client()  # a fresh client (never checked), same cache
    loopback.stop()  # nothing listens any more: a check or a request would fail
    again = asyncio.run(run_many([chat(client, f"n{i}") for i in range(3)]))
    assert all(r.cache_hit for r in again) and [r.text for r in again] == [r.text for r in first]
    with pytest.raises(EndpointError, match="not reachable"):  # the first miss does check (and fails)
        asyncio.run(chat(client, "not cached"))


def test_check_runs_once_for_many_concurrent_calls_and_across_loops(make_client, loopback):
    loopback.latency = 0.05
    loopback.models = ["loop-model"]
    client = make_client(concurrency=8)
    results = asyncio.run(run_many([chat(client, f"n{i}") for i in range(24)]))
    assert all(isinstance(r, ChatResult) for r in results)
    asyncio.run(chat(client, "on another event loop"))
    assert loopback.gets[MODELS] == 1 and loopback.count(CHAT) == 25
    asyncio.run(make_client(cache_dir=None).embed(["x"]))  # another client checks for itself
    assert loopback.gets[MODELS] == 2


def test_failed_check_is_remembered_by_the_client(make_client, loopback):
    loopback.models = ["something-else"]
    client = make_client()
    for _ in range(2):
        results = asyncio.run(run_many([chat(client, f"n{i}") for i in range(10)]))
        assert all(isinstance(r, EndpointError) for r in results)
        assert len({id(r) for r in results}) == 10  # each call raises its own instance
    assert loopback.gets[MODELS] == 1 and loopback.count() == 0


# ---------------------------------------------------------------- progress

PROGRESS = "autointerp.llm.progress"


def progress_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == PROGRESS]


def test_progress_counts_hits_misses_and_failures(make_client, loopback, caplog):
    loopback.script = lambda path, body: (400, {"error": {"message": "bad item"}}) \
        if "bad" in json.dumps(body) else None
    caplog.set_level(logging.INFO, logger=PROGRESS)
    client = make_client()
    asyncio.run(run_many([chat(client, f"n{i}") for i in range(3)]))  # cached before the job starts
    assert progress_lines(caplog) == []  # no progress unless asked for
    client.start_progress(10, "explain random/loop/Original", interval_s=0.0)
    items = [chat(client, f"n{i}") for i in range(9)] + [chat(client, "bad one")]
    asyncio.run(run_many(items, concurrency=1))
    lines = progress_lines(caplog)
    assert len(lines) == 10
    assert [int(x.split(": ", 1)[1].split("/")[0]) for x in lines] == list(range(1, 11))
    assert all(x.startswith("explain random/loop/Original: ") and "/10 calls (" in x for x in lines)
    assert "ETA" in lines[3] and "calls/s" in lines[3]
    assert lines[-1].startswith("explain random/loop/Original: 10/10 calls (3 cached, 1 failed), ")
    assert "ETA" not in lines[-1] and "took" in lines[-1]


def test_progress_is_rate_limited_but_always_logs_the_end(make_client, caplog):
    caplog.set_level(logging.INFO, logger=PROGRESS)
    client = make_client()
    client.start_progress(12, "simulate", interval_s=3600)
    asyncio.run(run_many([chat(client, f"n{i}") for i in range(12)]))
    lines = progress_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("simulate: 12/12 calls (0 cached, 0 failed), ")


def test_progress_beyond_the_expected_total_does_not_crash(make_client, caplog):
    caplog.set_level(logging.INFO, logger=PROGRESS)
    client = make_client()
    client.start_progress(2, "explain", interval_s=0.0)
    asyncio.run(run_many([chat(client, f"n{i}") for i in range(4)], concurrency=1))
    lines = progress_lines(caplog)
    assert [x.split(": ", 1)[1].split(" calls")[0] for x in lines] == ["1/2", "2/2", "3/2", "4/2"]
    assert "ETA" not in lines[2] and "ETA" not in lines[3]
    client.finish_progress()  # the end was logged already: nothing more
    assert len(progress_lines(caplog)) == 4


def test_progress_eta_and_finish_with_a_fake_clock(caplog):
    caplog.set_level(logging.INFO, logger=PROGRESS)
    now = [100.0]
    p = Progress(10, "job", interval_s=5.0, clock=lambda: now[0])
    for _ in range(4):  # one call per second
        now[0] += 1.0
        p.tick()
    assert progress_lines(caplog) == []  # 4 s < interval
    now[0] += 1.0
    p.tick(cached=True)
    assert progress_lines(caplog) == ["job: 5/10 calls (1 cached, 0 failed), 1.0 calls/s, ETA 5 s"]
    now[0] += 1.0
    p.tick(failed=True)
    assert len(progress_lines(caplog)) == 1  # 1 s since the last line
    now[0] += 594.0
    p.finish()  # fewer calls than expected: the job logs where it ended
    assert progress_lines(caplog)[-1] == "job: 6/10 calls (1 cached, 1 failed), 0.01 calls/s, ETA 6 min 40 s"
    p.finish()
    assert len(progress_lines(caplog)) == 2


def test_progress_heartbeat_logs_while_no_call_finishes():
    """One embedded-engine call can take 20 s: the line still comes every interval while it runs."""
    import threading

    from autointerp.common.progress import Progress

    seen = threading.Event()

    class Counting(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())
            if len(self.lines) >= 2:
                seen.set()

    logger = logging.getLogger("test.progress.heartbeat")
    handler = Counting()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        p = Progress(4, "job", interval_s=0.1, logger=logger, heartbeat=True)
        assert seen.wait(20)  # two lines without a single finished call
        assert all(line.startswith("job: 0/4 calls") for line in handler.lines)
        p.finish()
        n = len(handler.lines)
        assert handler.lines[-1].startswith("job: 0/4 calls")
        time.sleep(0.5)
        assert len(handler.lines) == n  # finish stops the heartbeat
    finally:
        logger.removeHandler(handler)


def test_jobs_side_by_side_share_the_role_rate_limit(loopback, tmp_path):
    """open_client(rate_share=3): this job paces at a third of the role's requests_per_minute (api_calls=3 jobs may
    run at once, so together they stay within the account's limit)."""
    from autointerp.llm.roles import open_client
    from autointerp.llm.settings import Endpoint

    role = Endpoint(provider="openai", model="loop-model", base_url=loopback.base_url, api_key_env=None,
                    context_length=8192, encoding="cl100k_base", price_input_per_1m=0.0, price_output_per_1m=0.0,
                    concurrency=4, requests_per_minute=360, tokens_per_minute=90_000, timeout_s=30, max_retries=2)
    with open_client("explainer", role, cache_dir=None, rate_share=3) as client:
        assert (client.cfg.requests_per_minute, client.cfg.tokens_per_minute) == (120, 30_000)
        _, wall = timed(run_many([chat(client, f"s{i}") for i in range(4)]))  # 0.5 s apart, not 1/6 s
    gaps = [b.t - a.t for a, b in zip(loopback.requests, loopback.requests[1:])]
    assert min(gaps) > 0.4 and 1.3 <= wall < 4.0
    with open_client("explainer", role, cache_dir=None) as alone:
        assert alone.cfg.requests_per_minute == 360
