"""Response cache: reruns, distinct samples, key material, errors, concurrency across processes, SIGKILL restart,
the API key never reaching disk, the two-level layout and the first layout, temp files, and per-key claims."""

import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autointerp.llm import ChatResult, LLMClient, LLMRequestError, ResponseCache, cache_key, run_many

CHAT = "/v1/chat/completions"
SRC = Path(__file__).resolve().parents[1] / "src"


def chat(client, content, **kw):
    kw = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 32, **kw}
    return client.chat([{"role": "user", "content": content}], **kw)


def entries(cache_dir):
    return sorted(Path(cache_dir).glob("v2/??/??/*.json"))


def claims(cache_dir):
    return sorted(p for p in Path(cache_dir).glob("claims/**/*") if p.is_file())


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


def test_temp_files_go_to_one_folder_and_opening_a_client_removes_stale_ones(make_client, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    cache, key = ResponseCache(root), "ab" + "0" * 62
    renames, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace",
                        lambda src, dst: (real_replace(src, dst), renames.append((Path(src), Path(dst)))))
    cache.put(key, {"q": 1}, {"text": "x"})
    monkeypatch.undo()
    assert [(src.parent, dst) for src, dst in renames] == [(root / "tmp", cache.path_for(key))]
    assert list((root / "tmp").iterdir()) == [] and cache.get(key) == {"text": "x"}

    old, fresh = root / "tmp" / "abc.1.dead.tmp", root / "tmp" / "abd.2.live.tmp"
    old.write_text("half")
    fresh.write_text("half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    make_client()  # opening a client is what cleans (jobs never call the cleaner themselves)
    assert not old.exists() and fresh.exists() and len(cache) == 1
    os.utime(fresh, (time.time() - 7200, time.time() - 7200))
    assert cache.remove_stale_temp_files(3600) == 1 and not fresh.exists()


# ---------------------------------------------------------------- layout: two levels, and the first layout still read

def test_two_level_layout_keeps_every_folder_small(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not under test here; 20,000 fsyncs are slow
    cache = ResponseCache(tmp_path)
    keys = [cache_key({"neuron": i}) for i in range(20_000)]
    for i, k in enumerate(keys):
        cache.put(k, {"neuron": i}, {"text": f"answer {i}"})
    k = keys[0]
    assert cache.path_for(k) == tmp_path / "v2" / k[:2] / k[2:4] / f"{k}.json" and cache.path_for(k).is_file()
    walk = list(os.walk(tmp_path))
    assert sum(len(files) for _, _, files in walk) == 20_000  # every entry a file, no temp file left over
    # The first layout put ~78 entries in each of 256 folders here (7,800 at 2 million); now a folder holds at
    # most 256 subfolders, or a handful of entries.
    assert max(len(files) for _, _, files in walk) <= 8
    assert max(len(dirs) + len(files) for _, dirs, files in walk) <= 256
    assert len(cache) == 20_000 and sorted(cache.keys()) == sorted(keys)
    assert all(cache.get(keys[i]) == {"text": f"answer {i}"} for i in range(0, 20_000, 997))


def _legacy_put(root: Path, entry_file: Path) -> Path:
    """Move an entry into the first layout, root/<key[:2]>/<key>.json (same file format)."""
    key = entry_file.stem
    legacy = root / key[:2] / f"{key}.json"
    legacy.parent.mkdir(parents=True, exist_ok=True)
    entry_file.rename(legacy)
    return legacy


def test_entries_of_the_first_layout_still_hit(make_client, loopback, tmp_path):
    root = tmp_path / "cache"
    first = asyncio.run(run_many([chat(make_client(), f"q{i}") for i in range(3)]))
    legacy = [_legacy_put(root, p) for p in entries(root)]
    assert entries(root) == [] and len(legacy) == 3
    cache = ResponseCache(root)
    assert len(cache) == 3 and sorted(cache.keys()) == sorted(r.cache_key for r in first)
    again = asyncio.run(run_many([chat(make_client(), f"q{i}") for i in range(3)]))
    assert loopback.count(CHAT) == 3 and all(r.cache_hit for r in again)
    assert [r.text for r in again] == [r.text for r in first]
    cache.put(first[0].cache_key, {"q": 0}, {"text": "newer"})  # a key in both layouts counts once; the new wins
    assert len(cache) == 3 and cache.get(first[0].cache_key) == {"text": "newer"}
    cache.path_for(first[0].cache_key).unlink()
    torn = cache.legacy_path_for(first[0].cache_key)
    torn.write_bytes(torn.read_bytes()[:50])  # torn in the first layout: a miss
    assert cache.get(first[0].cache_key) is None and cache.get(first[1].cache_key) is not None


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
    assert list((tmp_path / "tmp").iterdir()) == []  # every temp file was renamed into place


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


# ---------------------------------------------------------------- one request per key: in-flight sharing and claims

def test_identical_concurrent_calls_in_one_client_share_one_request(make_client, loopback, tmp_path):
    loopback.latency = 0.2
    client = make_client(price_input_per_1m=1.0, price_output_per_1m=1.0)
    tries, try_claim = [], client.cache.try_claim
    client.cache.try_claim = lambda *a: (tries.append(a[0]), try_claim(*a))[1]
    results = asyncio.run(run_many([chat(client, "same") for _ in range(10)]))
    # One claim attempt: the other nine waited on the in-process future, not on the claim file.
    assert loopback.count(CHAT) == 1 and len(tries) == 1 and len({r.text for r in results}) == 1
    assert sorted(r.cache_hit for r in results) == [False] + [True] * 9
    t = client.ledger.totals()
    sent = next(r for r in results if not r.cache_hit)
    assert (t["calls"], t["cache_hits"], t["requests"]) == (10, 9, 1)
    assert t["cost_usd"] == pytest.approx((sent.usage.prompt_tokens + sent.usage.completion_tokens) / 1e6)

    loopback.reset()  # a failure is shared as well: one request, every caller gets the error
    loopback.script = lambda path, body: (400, {"error": {"message": "bad request"}})
    failed = asyncio.run(run_many([chat(client, "fails") for _ in range(5)]))
    assert all(isinstance(e, LLMRequestError) for e in failed) and len({id(e) for e in failed}) == 5
    assert loopback.count(CHAT) == 1 and client.ledger.totals()["errors"] == 5
    assert len(entries(tmp_path / "cache")) == 1 and claims(tmp_path / "cache") == []


def test_a_holder_elsewhere_makes_a_miss_wait_for_its_answer(make_client, loopback, tmp_path):
    # Two clients stand for two processes: each has its own in-flight table, and only the claim file links them.
    loopback.latency = 0.3
    holder, waiter = make_client(), make_client(price_input_per_1m=1.0)

    async def go():
        a = asyncio.ensure_future(chat(holder, "q"))
        while loopback.count(CHAT) == 0:
            await asyncio.sleep(0.01)
        assert len(claims(tmp_path / "cache")) == 1
        return await asyncio.gather(a, chat(waiter, "q"))

    ra, rb = asyncio.run(go())
    assert loopback.count(CHAT) == 1 and not ra.cache_hit and rb.cache_hit and rb.text == ra.text
    t = waiter.ledger.totals()
    assert (t["cache_hits"], t["requests"], t["cost_usd"]) == (1, 0, 0.0) and claims(tmp_path / "cache") == []


def test_a_failed_holder_releases_its_claim_and_the_waiter_sends_itself(make_client, loopback, tmp_path):
    loopback.latency = 0.3
    loopback.script = lambda path, body: (400, {"error": {"message": "bad"}}) if loopback.count(CHAT) == 1 else None
    holder, waiter = make_client(max_retries=0), make_client()

    async def go():
        a = asyncio.ensure_future(chat(holder, "q"))
        while loopback.count(CHAT) == 0:
            await asyncio.sleep(0.01)
        return await asyncio.gather(a, chat(waiter, "q"), return_exceptions=True)

    ra, rb = asyncio.run(go())
    assert isinstance(ra, LLMRequestError) and isinstance(rb, ChatResult) and not rb.cache_hit
    first, second = loopback.requests
    assert second.t >= first.t + 0.3  # sent only once the holder's request had failed: it waited on the claim
    assert len(entries(tmp_path / "cache")) == 1 and claims(tmp_path / "cache") == []


def test_stale_claims_and_claims_of_dead_processes_do_not_block(make_client, loopback, tmp_path):
    probe = make_client(cache_dir=str(tmp_path / "probe"))  # learns the keys; keys do not depend on the folder
    keys = [asyncio.run(chat(probe, q)).cache_key for q in ("old", "orphan", "live")]
    loopback.reset()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = make_client()
    client.claim_ttl_s = 1.0
    # mtimes: an hour ago; and 60 s ahead (fresh throughout the test, as from an NFS server whose clock runs ahead)
    holders = [("elsewhere 123", -3600), (f"{socket.gethostname()} {dead.pid}", 60), ("elsewhere 456", 60)]
    for key, (holder, offset) in zip(keys, holders):
        path = client.cache.claim_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(holder)
        os.utime(path, (time.time() + offset, time.time() + offset))

    async def timed(*queries):
        await chat(client, "warm up")  # the client's start (HTTP pool, endpoint check) is not what is timed
        out = []
        for q in queries:
            t = time.monotonic()
            r = await chat(client, q)
            out.append((r.cache_hit, time.monotonic() - t))
        return out

    (old_hit, old_s), (orphan_hit, orphan_s), (live_hit, live_s) = asyncio.run(timed("old", "orphan", "live"))
    # An hour-old claim, and a fresh one whose holder on this host has exited, are taken over at once; a fresh
    # claim of a holder elsewhere is waited on, for one TTL by our own clock (its mtime would say for a minute).
    assert not (old_hit or orphan_hit or live_hit) and old_s < 0.5 and orphan_s < 0.5 and 1.0 <= live_s < 3.0
    assert loopback.count(CHAT) == 4 and claims(tmp_path / "cache") == []


def _same_calls(base_url: str, cache_dir: str, n: int, start, out) -> None:
    """One process of the test below: n calls that every other process makes too."""
    client = LLMClient.from_config("explainer", {"model": "loop-model", "base_url": base_url, "api_key_env": None,
                                                 "cache_dir": cache_dir})
    start.wait()  # all processes start together
    results = asyncio.run(run_many([chat(client, f"item {i}") for i in range(n)]))
    t = client.ledger.totals()
    out.put({"texts": [r.text for r in results], "requests": t["requests"], "hits": t["cache_hits"]})


def test_processes_making_the_same_calls_send_each_request_once(loopback, tmp_path):
    n_procs, n_calls = 8, 30
    loopback.latency = 0.1
    # Children fork from one server process that imported this module once: eight interpreters each importing
    # the client and pytest took most of the test's time.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    start, out = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=_same_calls, args=(loopback.base_url, str(tmp_path / "cache"), n_calls, start, out))
             for _ in range(n_procs)]
    for p in procs:
        p.start()
    try:
        outs = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            p.kill()
    assert all(p.exitcode == 0 for p in procs)
    # With claims disabled every process sends all 30 (240 requests).
    assert loopback.count(CHAT) == n_calls
    assert sorted(_item(r) for r in loopback.requests) == list(range(n_calls))
    assert sum(o["requests"] for o in outs) == n_calls and sum(o["hits"] for o in outs) == (n_procs - 1) * n_calls
    assert all(o["texts"] == outs[0]["texts"] for o in outs) and len(set(outs[0]["texts"])) == n_calls
    assert len(entries(tmp_path / "cache")) == n_calls and claims(tmp_path / "cache") == []


# ---------------------------------------------------------------- echo answers are stored from the offset asked for

def test_echo_entries_keep_only_positions_from_the_offset_and_refetch_when_cut_short(make_client, loopback, tmp_path):
    prompt = "The few-shot part is long. The record: alpha beta gamma delta"
    start = prompt.index("alpha")
    whole = asyncio.run(make_client().completion_echo_logprobs(prompt, top_logprobs=3))
    assert whole.from_offset == 0 and whole.text_offsets[0] == 0
    tail_of_whole = [(t, o, lp) for t, o, lp in zip(whole.tokens, whole.text_offsets, whole.top_logprobs)
                     if o >= start]
    assert 0 < len(tail_of_whole) < len(whole.tokens)

    # An entry kept from the start serves a call that wants less: no request, the same positions from `start`.
    n = loopback.count()
    cut = asyncio.run(make_client().completion_echo_logprobs(prompt, top_logprobs=3, from_offset=start))
    assert loopback.count() == n and cut.cache_hit and cut.from_offset == start
    assert list(zip(cut.tokens, cut.text_offsets, cut.top_logprobs)) == tail_of_whole

    # A fresh cache stores only the tail, with the same key (the request is the same) ...
    small = make_client(cache_dir=str(tmp_path / "small"))
    first = asyncio.run(small.completion_echo_logprobs(prompt, top_logprobs=3, from_offset=start))
    assert first.cache_key == whole.cache_key and not first.cache_hit
    [entry] = entries(tmp_path / "small")
    stored = json.loads(entry.read_text())["response"]
    assert stored["from_offset"] == start and min(stored["text_offsets"]) >= start
    assert list(zip(first.tokens, first.text_offsets, first.top_logprobs)) == tail_of_whole
    assert len(entry.read_bytes()) < len(entries(tmp_path / "cache")[0].read_bytes())
    # ... which cannot serve a call that wants the whole prompt: that one is sent again and the entry grows back.
    n = loopback.count()
    again = asyncio.run(small.completion_echo_logprobs(prompt, top_logprobs=3))
    assert loopback.count() == n + 1 and not again.cache_hit and again.tokens == whole.tokens
    assert json.loads(entry.read_text())["response"]["from_offset"] == 0
    with pytest.raises(ValueError, match="outside the prompt"):
        asyncio.run(small.completion_echo_logprobs(prompt, from_offset=len(prompt) + 1))
