"""Response cache: reruns, distinct samples, key material, errors, concurrency across processes, SIGKILL restart,
and the API key never reaching disk."""

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autointerp.llm import LLMClient, LLMRequestError, ResponseCache, cache_key, run_many

CHAT = "/v1/chat/completions"
SRC = Path(__file__).resolve().parents[1] / "src"


def chat(client, content, **kw):
    kw = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 32, **kw}
    return client.chat([{"role": "user", "content": content}], **kw)


def entries(cache_dir):
    return sorted(Path(cache_dir).glob("??/*.json"))


def test_rerun_makes_zero_requests_and_returns_identical_results(make_client, loopback, tmp_path):
    async def work(client):
        return await run_many([chat(client, f"neuron {i}") for i in range(10)]
                              + [client.completion_echo_logprobs("a b c d"), client.embed(["x", "y"])])

    first = asyncio.run(work(make_client()))
    n = loopback.count()
    assert n == 12 and len(entries(tmp_path / "cache")) == 12
    again_client = make_client()  # fresh client and ledger, same cache dir
    again = asyncio.run(work(again_client))
    assert loopback.count() == n
    t = again_client.ledger.totals()
    assert (t["cache_hits"], t["requests"], t["cost_usd"]) == (12, 0, 0.0)
    strip = lambda r: {k: v for k, v in vars(r).items() if k not in ("latency_s", "cache_hit", "attempts")}
    assert [strip(r) for r in again] == [strip(r) for r in first] and all(r.cache_hit for r in again)


def test_n_samples_at_temperature_one_are_distinct_entries(make_client, loopback, tmp_path):
    client = make_client()
    samples = asyncio.run(run_many([chat(client, "explain", temperature=1.0, sample_index=i) for i in range(5)]))
    assert loopback.count(CHAT) == 5 and len({s.cache_key for s in samples}) == 5
    assert len(entries(tmp_path / "cache")) == 5
    asyncio.run(run_many([chat(client, "explain", temperature=1.0, sample_index=i) for i in range(5)]))
    assert loopback.count(CHAT) == 5


def test_key_material_covers_what_determines_the_answer_and_nothing_else(loopback, tmp_path, monkeypatch):
    monkeypatch.setenv("KEY_A", "sk-aaa")
    monkeypatch.setenv("KEY_B", "sk-bbb")
    base = {"model": "m", "base_url": loopback.base_url, "cache_dir": str(tmp_path), "api_key_env": "KEY_A"}

    def key(cfg=None, **kw):
        client = LLMClient.from_config("explainer", {**base, **(cfg or {})})
        return asyncio.run(chat(client, "same", **kw)).cache_key

    k = key()
    # Not key material: the API key, a trailing slash or case in the URL, the role's timeouts and retries.
    assert key({"api_key_env": "KEY_B"}) == k
    assert key({"base_url": loopback.base_url.replace("http://", "HTTP://") + "/"}) == k
    assert key({"timeout_s": 5, "max_retries": 1, "concurrency": 2}) == k
    assert key(temperature=0, top_p=1, max_tokens=32.0) == k  # numbers normalised: 0 == 0.0
    # Key material: model, endpoint, every sampling option and the sample index.
    other_endpoint = LLMClient.from_config("explainer", {**base, "base_url": "http://127.0.0.1:9/v1"}).cfg.endpoint_id
    assert other_endpoint != LLMClient.from_config("explainer", base).cfg.endpoint_id
    others = [key({"model": "m2"}), key(temperature=0.5),
              key(top_p=0.9), key(max_tokens=33), key(seed=1), key(logprobs=True), key(sample_index=1)]
    assert len(set(others + [k])) == len(others) + 1
    # The embedded engine listens on an ephemeral port: its cache identity must not depend on it.
    local = {"provider": "local", "model": "m", "cache_dir": str(tmp_path)}
    c1 = LLMClient.from_config("simulator", {**local, "base_url": "http://127.0.0.1:1111/v1"})
    c2 = LLMClient.from_config("simulator", {**local, "base_url": "http://127.0.0.1:2222/v1"})
    assert c1.cfg.endpoint_id == c2.cfg.endpoint_id == "local"


def test_errors_are_not_cached(make_client, loopback, tmp_path):
    client = make_client(max_retries=1)
    loopback.add_faults("400")
    with pytest.raises(LLMRequestError):
        asyncio.run(chat(client, "q"))
    loopback.add_faults("500", 2)
    with pytest.raises(LLMRequestError):
        asyncio.run(chat(client, "q"))
    assert entries(tmp_path / "cache") == []
    r = asyncio.run(chat(client, "q"))
    assert not r.cache_hit and loopback.count(CHAT) == 4 and len(entries(tmp_path / "cache")) == 1


def test_unparsable_or_foreign_entry_is_a_miss_and_gets_replaced(make_client, loopback, tmp_path):
    first = asyncio.run(chat(make_client(), "q"))
    path = ResponseCache(tmp_path / "cache").path_for(first.cache_key)
    for garbage in (path.read_bytes()[:40], b"", json.dumps({"format": 1, "key": "0" * 64, "response": {}}).encode()):
        path.write_bytes(garbage)
        again = asyncio.run(chat(make_client(), "q"))
        assert not again.cache_hit and again.text == first.text
    assert loopback.count(CHAT) == 4 and json.loads(path.read_bytes())["key"] == first.cache_key


def test_stale_temp_files_are_pruned(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("ab" + "0" * 62, {"q": 1}, {"text": "x"})
    old, fresh = tmp_path / "ab" / ".abc.1.dead.tmp", tmp_path / "ab" / ".abd.2.live.tmp"
    old.write_text("half")
    fresh.write_text("half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert cache.remove_stale_temp_files(3600) == 1 and fresh.exists() and not old.exists() and len(cache) == 1


# ---------------------------------------------------------------- two processes sharing one cache

def _payload(i: int) -> dict:
    return {"text": f"{i}:" + "y" * 100_000}  # big enough that a non-atomic write would be seen half-done


def _cache_worker(root: str, keys: list[int], rounds: int) -> int:
    """Write and read back overlapping keys; return the number of torn or wrong reads seen."""
    cache, bad = ResponseCache(root), 0
    for _ in range(rounds):
        for i in keys:
            k = cache_key({"i": i})
            got = cache.get(k)
            if got is not None and got != _payload(i):
                bad += 1
            cache.put(k, {"i": i}, _payload(i))
    return bad


def test_two_processes_sharing_a_cache_lose_nothing_and_never_tear(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        bad = pool.starmap(_cache_worker, [(str(tmp_path), list(range(0, 120)), 3),
                                           (str(tmp_path), list(range(119, 59, -1)) + list(range(120, 180)), 3)])
    assert bad == [0, 0]
    cache = ResponseCache(tmp_path)
    assert len(cache) == 180
    assert all(cache.get(cache_key({"i": i})) == _payload(i) for i in range(180))
    assert list(tmp_path.glob("??/.*.tmp")) == []  # every temp file was renamed into place


# ---------------------------------------------------------------- SIGKILL mid-run, then restart

DRIVER = textwrap.dedent("""
    import asyncio, json, sys
    from autointerp.llm import LLMClient, run_many

    base_url, cache_dir, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    async def main():
        client = LLMClient.from_config("explainer", {"model": "loop-model", "base_url": base_url,
                                                     "api_key_env": None, "cache_dir": cache_dir, "concurrency": 4})
        results = await run_many([client.chat([{"role": "user", "content": f"item {i}"}], temperature=1.0,
                                              top_p=1.0, max_tokens=16) for i in range(n)])
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise SystemExit(repr(failed[0]))
        # Outputs only once everything is done: after a kill, the cache entries are exactly the finished items.
        with open(out, "w") as f:
            json.dump([r.text for r in results], f)

    asyncio.run(main())
""")


def _item(recorded) -> int:
    return int(recorded.body["messages"][0]["content"].split()[1])


def test_sigkill_midway_then_restart_repeats_no_finished_item(loopback, tmp_path):
    n = 40
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    cache_dir = tmp_path / "cache"

    def run(out, cache=cache_dir, **kw):
        return subprocess.Popen([sys.executable, str(driver), loopback.base_url, str(cache), str(out), str(n)],
                                env=env, **kw)

    assert run(tmp_path / "reference.json", cache=tmp_path / "ref_cache").wait(timeout=60) == 0
    reference = json.loads((tmp_path / "reference.json").read_text())

    loopback.reset()
    loopback.latency = 0.1
    proc = run(tmp_path / "out.json")
    deadline = time.monotonic() + 30
    while loopback.count(CHAT) < 14 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "out.json").exists()
    time.sleep(0.3)  # let the server log any request the dead client had already sent
    first_phase = len(loopback.requests)

    finished = set()
    for p in entries(cache_dir):  # no torn entries: every file parses and matches its name
        entry = json.loads(p.read_bytes())
        assert entry["key"] == p.stem
        finished.add(int(entry["request"]["messages"][0]["content"].split()[1]))
    assert 0 < len(finished) < n

    assert run(tmp_path / "out.json").wait(timeout=60) == 0
    second = [_item(r) for r in loopback.requests[first_phase:]]
    assert not finished & set(second), "a finished item was requested again"
    assert sorted(second) == sorted(set(range(n)) - finished), "each unfinished item requested exactly once"
    assert json.loads((tmp_path / "out.json").read_text()) == reference

    before = loopback.count()
    assert run(tmp_path / "out2.json").wait(timeout=60) == 0
    assert loopback.count() == before and json.loads((tmp_path / "out2.json").read_text()) == reference


# ---------------------------------------------------------------- the key never reaches disk

def test_planted_api_key_never_reaches_cache_or_ledger(loopback, tmp_path, monkeypatch):
    secret = "sk-planted-SECRET-123"
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", secret)
    client = LLMClient.from_config("explainer", {
        "model": "m", "base_url": loopback.base_url, "api_key_env": "AUTOINTERP_TEST_KEY",
        "cache_dir": str(tmp_path / "cache"), "backoff_initial_s": 0.01, "max_retries": 1})
    loopback.script = lambda path, body: (401, {"error": {"message": f"bad key {secret}"}}) \
        if "reject" in json.dumps(body) else None

    async def work():
        await chat(client, "hello")
        await chat(client, "hello", temperature=1.0, logprobs=True, top_logprobs=3, sample_index=2)
        await client.completion_echo_logprobs("some prompt text")
        await client.embed(["e1", "e2"])
        with pytest.raises(LLMRequestError) as ei:
            await chat(client, "reject me")
        return ei.value

    err = asyncio.run(work())
    client.ledger.write_jsonl(tmp_path / "ledger.jsonl")
    # The key did travel (so the test is not vacuous) ...
    assert all(r.headers["authorization"] == f"Bearer {secret}" for r in loopback.requests)
    # ... but is in no file, no error message and no repr.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 5
    assert not [p for p in files if secret.encode() in p.read_bytes()]
    assert secret not in str(err) and secret not in repr(client) and secret not in repr(client.cfg)
