"""Seeded sampling of the embedded engine, and the ``number_aware_after`` restriction of number-aware logprobs.

Same tiny random-weight Llama (SmolLM2's tokenizer) as tests/test_local_engine.py, whose fixtures this reuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from autointerp.engine import LocalEngine, serve  # noqa: E402
from test_local_engine import (  # noqa: E402,F401 - fixtures are found by name
    MSGS, PREFIX, TAIL_A, TAIL_B, _digit_ids, _post, digit_model_dir, tiny_model_dir,
)

PROMPTS = [
    MSGS,
    [{"role": "user", "content": "Summarise: the cat sat on the mat and purred."}],
    [{"role": "system", "content": PREFIX}, {"role": "user", "content": "Explain neuron 7."}],
]
SAMPLED = dict(temperature=1.0, top_p=1.0, max_tokens=16)


@pytest.fixture(scope="module")
def cached(tiny_model_dir):
    return LocalEngine(tiny_model_dir, cache_entries=4)


@pytest.fixture(scope="module")
def uncached(tiny_model_dir):
    return LocalEngine(tiny_model_dir, cache_entries=0)


# ------------------------------------------------------------------------------------------------ seeds


def test_same_seed_same_text_whatever_came_before(cached, uncached):
    first = [cached.chat(m, seed=1234, **SAMPLED) for m in PROMPTS]
    assert all(g.seed == 1234 for g in first)
    assert sum(g.completion_tokens for g in first) >= 12  # long enough for the draws to matter
    # other requests in between: seeded, unseeded, echo logprobs, raw completions; the global RNG moved too
    cached.chat(PROMPTS[1], seed=99, **SAMPLED)
    cached.chat(PROMPTS[0], **SAMPLED)
    cached.prompt_logprobs(PREFIX + TAIL_B, 5)
    cached.complete("The cat", temperature=1.0, max_tokens=6)
    torch.manual_seed(987)
    torch.rand(1000)
    again = [cached.chat(m, seed=1234, **SAMPLED) for m in reversed(PROMPTS)][::-1]
    other = [uncached.chat(m, seed=1234, **SAMPLED) for m in PROMPTS]  # another instance, nothing cached
    for a, b, c in zip(first, again, other):
        assert a.text == b.text == c.text
        assert a.token_ids == b.token_ids == c.token_ids


def test_different_seeds_give_different_samples(cached):
    one = [cached.chat(m, seed=1, **SAMPLED).text for m in PROMPTS]
    two = [cached.chat(m, seed=2, **SAMPLED).text for m in PROMPTS]
    assert one != two
    many = {cached.chat(PROMPTS[1], seed=s, **SAMPLED).text for s in range(6)}
    assert len(many) > 1


def test_no_seed_draws_a_fresh_one_that_replays(cached):
    a = cached.chat(PROMPTS[1], **SAMPLED)
    b = cached.chat(PROMPTS[1], **SAMPLED)
    assert isinstance(a.seed, int) and isinstance(b.seed, int) and a.seed != b.seed
    replay = cached.chat(PROMPTS[1], seed=a.seed, **SAMPLED)
    assert replay.token_ids == a.token_ids
    # completions (raw prompts) follow the same rule
    c = cached.complete("The cat sat", temperature=1.0, max_tokens=8, seed=5)
    assert cached.complete("The cat sat", temperature=1.0, max_tokens=8, seed=5).token_ids == c.token_ids


def test_seed_must_be_an_integer(cached):
    from autointerp.engine import EngineError

    for bad in (1.5, "3", True):
        with pytest.raises(EngineError) as ei:
            cached.chat(MSGS, seed=bad, max_tokens=2)
        assert ei.value.param == "seed"


def test_same_seed_in_another_process(tiny_model_dir, uncached):
    import autointerp

    code = (
        "import json, sys\n"
        "from autointerp.engine import LocalEngine\n"
        "e = LocalEngine(sys.argv[1], cache_entries=0)\n"
        "msgs = json.loads(sys.argv[2])\n"
        "print(json.dumps([e.chat(m, temperature=1.0, top_p=1.0, max_tokens=16, seed=s).text\n"
        "                  for m in msgs for s in (0, 7)]))\n"
    )
    env = dict(os.environ)
    src = str(Path(autointerp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir), json.dumps(PROMPTS[:2])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [uncached.chat(m, seed=s, **SAMPLED).text for m in PROMPTS[:2] for s in (0, 7)]
    assert theirs == ours


def test_seed_reaches_the_engine_over_http(cached):
    def chat(base_url, seed):
        body = {"model": "m", "messages": PROMPTS[1], "seed": seed, **SAMPLED}
        status, out = _post(base_url, "/chat/completions", json.dumps(body).encode())
        assert status == 200, out
        return out["choices"][0]["message"]["content"]

    def complete(base_url, seed):
        body = {"model": "m", "prompt": "The cat sat", "seed": seed, **SAMPLED}
        status, out = _post(base_url, "/completions", json.dumps(body).encode())
        assert status == 200, out
        return out["choices"][0]["text"]

    with serve(cached) as base_url:
        texts = {s: chat(base_url, s) for s in range(4)}
        assert chat(base_url, 2) == texts[2]
        completions = [complete(base_url, s) for s in (3, 3)]
        status, out = _post(base_url, "/chat/completions",
                            json.dumps({"model": "m", "messages": MSGS, "seed": "x"}).encode())
        assert status == 400 and out["error"]["param"] == "seed"
    for s, text in texts.items():  # the server's answer is the engine's answer for that seed
        assert text == cached.chat(PROMPTS[1], seed=s, **SAMPLED).text
    assert len(set(texts.values())) > 1
    assert completions[0] == completions[1] == cached.complete("The cat sat", seed=3, **SAMPLED).text


# ------------------------------------------------------------------------------------------------ number_aware_after

WORDS = "the cat sat on a mat and then ran to see her dog who was quite far from home today".split()
TAB_PROMPT = PREFIX + "".join(f"{w}\t{(i * 7) % 11}\n" for i, w in enumerate(WORDS * 2))
N_TOP = 100


@pytest.fixture(scope="module")
def tab_digit_model_dir(digit_model_dir, tmp_path_factory):
    """The digit-boosted tiny model with the (tied) embedding of "\\t" moved towards "1", so that "1" ranks high
    after a TAB at several positions (random weights alone rarely put it there)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(digit_model_dir)
    model = LlamaForCausalLM.from_pretrained(digit_model_dir).eval()
    (tab,) = tok("\t", add_special_tokens=False)["input_ids"]
    one = tok.convert_tokens_to_ids("1")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[tab] += emb[one]
    out = tmp_path_factory.mktemp("tiny_llama_tab_digits")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_number_aware_after_folds_ten_only_after_the_string(tab_digit_model_dir):
    after = LocalEngine(tab_digit_model_dir, cache_entries=0, number_aware_logprobs=True, number_aware_after="\t")
    everywhere = LocalEngine(tab_digit_model_dir, cache_entries=0, number_aware_logprobs=True)
    res = after.prompt_logprobs(TAB_PROMPT, N_TOP)
    every = everywhere.prompt_logprobs(TAB_PROMPT, N_TOP)
    raw = after.prompt_logprobs(TAB_PROMPT, N_TOP, merge_digit_numbers=False)
    off = LocalEngine(tab_digit_model_dir, cache_entries=0).prompt_logprobs(TAB_PROMPT, N_TOP)

    # positions right after a TAB, from the text (not from the engine's token test)
    after_tab = {i for i, o in enumerate(res.text_offset) if TAB_PROMPT[:o].endswith("\t")}
    assert len(after_tab) == TAB_PROMPT.count("\t")
    with_ten = {i for i, d in enumerate(res.top_logprobs) if d is not None and "10" in d}
    assert with_ten and with_ten <= after_tab
    every_ten = {i for i, d in enumerate(every.top_logprobs) if d is not None and "10" in d}
    assert every_ten - after_tab  # unrestricted, the fold shows up elsewhere too: the restriction did something
    assert not any("10" in d for d in raw.top_logprobs[1:]) and raw.digit_merged is None
    assert not any("10" in d for d in off.top_logprobs[1:]) and off.digit_merged is None

    digits = _digit_ids(after)
    one, zero = digits[1], digits[0]
    assert res.digit_merged == sorted(i for i in after_tab if one in off.top_token_ids[i])
    for i in range(1, len(res.tokens)):
        if i in after_tab:
            # the same fold as the unrestricted mode (its extra pass batches other queries: float rounding)
            assert res.top_logprobs[i].keys() == every.top_logprobs[i].keys()
            assert all(abs(v - every.top_logprobs[i][t]) < 1e-4 for t, v in res.top_logprobs[i].items())
        else:
            assert res.top_logprobs[i] == off.top_logprobs[i]  # untouched
    for i in sorted(with_ten):  # "10" = P("1") * P("0" | prefix + "1"), by brute force in float64
        full = res.token_ids[:i] + [one]
        with torch.inference_mode():
            lsm = torch.log_softmax(after.model(torch.tensor([full])).logits[0].double(), dim=-1)
        assert abs(res.top_logprobs[i]["10"] - (lsm[-2, one] + lsm[-1, zero]).item()) < 1e-4


def test_number_aware_after_with_the_prefix_cache(tab_digit_model_dir):
    ref = LocalEngine(tab_digit_model_dir, cache_entries=0, number_aware_logprobs=True, number_aware_after="\t")
    eng = LocalEngine(tab_digit_model_dir, cache_entries=4, number_aware_logprobs=True, number_aware_after="\t")
    eng.prompt_logprobs(TAB_PROMPT, N_TOP, merge_digit_numbers=False)  # stored without the mode
    for prompt in (TAB_PROMPT + "cat\t3\n", TAB_PROMPT + TAIL_A, TAB_PROMPT + "cat\t3\n"):
        got = eng.prompt_logprobs(prompt, N_TOP)
        assert eng.last_timing["reused_tokens"] > 0
        want = ref.prompt_logprobs(prompt, N_TOP)
        assert got.digit_merged == want.digit_merged
        for a, b in zip(got.top_logprobs, want.top_logprobs):
            assert (a is None) == (b is None)
            if a is not None:
                assert ("10" in a) == ("10" in b)
                if "10" in a:
                    assert abs(a["10"] - b["10"]) < 1e-4


# ------------------------------------------------------------------------------------------------ echo_positions_near

def test_echo_positions_near_tab_computes_only_those_rows(tab_digit_model_dir):
    """The simulator's engine computes echoed logprobs only next to a TAB: the same values there as a full
    echo (prefix cache on, so later prompts reuse sparse rows), None elsewhere, tokens and offsets complete;
    the HTTP server applies the engine's default and lets a request ask for every row."""
    sparse = LocalEngine(tab_digit_model_dir, cache_entries=4, number_aware_logprobs=True, number_aware_after="\t",
                         echo_positions_near="\t")
    full = LocalEngine(tab_digit_model_dir, cache_entries=0, number_aware_logprobs=True, number_aware_after="\t")
    prompts = [TAB_PROMPT, TAB_PROMPT[: len(TAB_PROMPT) // 2] + "mat\t3\nhome\t7\n"]
    for prompt in prompts:
        got = sparse.prompt_logprobs(prompt, N_TOP, positions_near="\t")
        ref = full.prompt_logprobs(prompt, N_TOP)
        assert got.tokens == ref.tokens and got.text_offset == ref.text_offset
        # from the text, not the engine's own token test: tokens right after a TAB, or a TAB merged with more
        near = {i for i, (o, t) in enumerate(zip(ref.text_offset, ref.tokens))
                if prompt[:o].endswith("\t") or (t.startswith("\t") and len(t) > 1)}
        assert len(near) == prompt.count("\t")
        computed = {i for i, d in enumerate(got.top_logprobs) if d is not None}
        assert computed == near
        for i in near:
            assert got.top_logprobs[i].keys() == ref.top_logprobs[i].keys()
            assert all(abs(v - ref.top_logprobs[i][t]) < 1e-4 for t, v in got.top_logprobs[i].items())
            assert abs(got.token_logprobs[i] - ref.token_logprobs[i]) < 1e-4
        assert all(got.token_logprobs[i] is None for i in range(len(got.tokens)) if i not in near)

    echo = {"model": "m", "prompt": TAB_PROMPT, "echo": True, "max_tokens": 0, "logprobs": 5}
    with serve(sparse) as base_url:
        status, body = _post(base_url, "/completions", json.dumps(echo).encode())
        assert status == 200
        default = body["choices"][0]["logprobs"]["top_logprobs"]
        status, body = _post(base_url, "/completions", json.dumps(dict(echo, echo_positions_near=None)).encode())
        every = body["choices"][0]["logprobs"]["top_logprobs"]
        status, bad = _post(base_url, "/completions", json.dumps(dict(echo, echo_positions_near=1)).encode())
    assert 0 < sum(d is not None for d in default) == TAB_PROMPT.count("\t") < len(default)
    assert all(d is not None for d in every[1:])
    assert status == 400 and bad["error"]["param"] == "echo_positions_near"
