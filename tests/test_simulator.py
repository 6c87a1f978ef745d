"""The all-at-once simulator: golden prompt, EV rule, offset alignment (echo), chat transport, end to end."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
import regex

from autointerp.prompts.formats.render import END_OF_PROMPT
from autointerp.simulate import (
    SequenceSimulation,
    align_prompt_logprobs,
    build_chat_simulation_messages,
    build_simulator_prompt,
    expected_value,
    generated_offsets,
    parse_chat_simulation,
    simulate_sequence,
    simulate_sequences,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
RESPONSES = Path(__file__).resolve().parent / "data" / "simulator_responses"
EXPL = "words related to colors and nothing else"
LN = math.log


def _shared_json(name: str):
    path = SHARED / "reference-data" / name
    if not path.is_file():
        pytest.skip(f"{path} is not available (../shared absent)")
    return json.loads(path.read_text(encoding="utf-8"))


# --- prompt ---------------------------------------------------------------------------------------------------


def test_golden_if_prompt_byte_for_byte():
    golden = _shared_json("derived_golden_prompts_colors_puzzle.json")["Simulator_all_at_once_IF"]
    puzzle = _shared_json("puzzles.json")["colors"]
    tokens = [item if isinstance(item, str) else item[0] for item in puzzle["sentences"][0]]
    prompt = build_simulator_prompt(puzzle["explanation"], tokens)
    assert prompt.text.encode("utf-8") == golden.encode("utf-8")


def test_unknown_offsets_point_into_the_target_block():
    tokens = ["Green", " smoke", "\n", "\t", "<", " unknown", "日本", ""]
    p = build_simulator_prompt("  colors.  ", tokens)
    block = p.text.rfind("<start>")
    assert len(p.unknown_offsets) == len(tokens)
    for tok, u in zip(tokens, p.unknown_offsets):
        assert u > block and p.text[u - 1 - len(tok):u + 7] == f"{tok}\tunknown"
    assert p.text.endswith("\tunknown\n<end>\n")
    assert "find colors.<|endofprompt|>" in p.text  # target explanation stripped
    # The chat form is the same content: IF = messages joined, <|endofprompt|> after the last user turn.
    last_user = max(i for i, m in enumerate(p.messages) if m["role"] == "user")
    joined = "".join(m["content"] + (END_OF_PROMPT if i == last_user else "") for i, m in enumerate(p.messages))
    assert joined == p.text


def test_chat_messages_reveal_every_few_shot_value():
    msgs = build_chat_simulation_messages(EXPL, ["Green", "\n", "a\\b"])
    assert msgs[0]["role"] == "system" and len(msgs) == 1 + 2 * 6 + 1
    assert all("unknown" not in m["content"] for m in msgs[2:-1:2])
    assert msgs[2]["content"].splitlines()[-2:] == ["earing\t10", " acts\t0"]  # example 1, record 1, revealed
    assert msgs[-1]["content"].endswith("Tokens:\nGreen\n\\n\na\\\\b")
    assert msgs[-1]["content"].startswith("Neuron 4\n")


# --- expected value -------------------------------------------------------------------------------------------


def test_expected_value_rule():
    assert expected_value({"0": LN(0.5), "10": LN(0.5)}) == (5.0, {0: 0.5, 10: 0.5})
    ev, dist = expected_value({"0": LN(0.2), "5": LN(0.2), " the": LN(0.5), "unknown": LN(0.1)})
    assert ev == pytest.approx(2.5) and dist == pytest.approx({0: 0.5, 5: 0.5})
    # Only exact spellings count after the TAB: " 5", "05", "11" and "5\n" are other strings.
    ev, dist = expected_value({"3": LN(0.1), " 5": LN(0.4), "05": LN(0.2), "11": LN(0.2), "5\n": LN(0.1)})
    assert (ev, dist) == (pytest.approx(3.0), {3: pytest.approx(1.0)})
    assert expected_value({" the": -0.1, "unknown": -2.0}) == (0.0, {})
    assert expected_value({}) == (0.0, {}) and expected_value(None) == (0.0, {})
    ev, dist = expected_value({"\t2": LN(0.3), "\t4": LN(0.1), "2": LN(0.6)}, prefix="\t")
    assert ev == pytest.approx(2.5) and set(dist) == {2, 4}


# --- echo alignment on a realistic tokenisation ---------------------------------------------------------------

# GPT-2's pre-tokeniser; each piece is one token (enough to exercise the alignment, BPE merges aside).
_GPT2 = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def tokenize(text: str, *, merge_tab_unknown=False, straddle: str | None = None):
    """(tokens, offsets) like an OpenAI echo response. "日本" is split into bytes: tokens at one char offset.
    merge_tab_unknown: "\\t" + "unknown" -> one token. straddle: that subject token's line "X\\tunknown" ->
    one token (no token starts at the TAB or at "unknown")."""
    toks, offs = [], []
    for m in _GPT2.finditer(text):
        toks.append(m.group()), offs.append(m.start())
    out_t, out_o, i = [], [], 0
    while i < len(toks):
        t, o = toks[i], offs[i]
        if merge_tab_unknown and t == "\t" and i + 1 < len(toks) and toks[i + 1] == "unknown":
            out_t.append("\tunknown"), out_o.append(o)
            i += 2
            continue
        if straddle is not None and t == straddle and toks[i + 1:i + 3] == ["\t", "unknown"]:
            out_t.append(t + "\tunknown"), out_o.append(o)
            i += 3
            continue
        if t == "日本":
            out_t += ["bytes:\\xe6\\x97", "bytes:\\xa5", "本"]
            out_o += [o, o, o + 1]
        else:
            out_t.append(t), out_o.append(o)
        i += 1
    return out_t, out_o


def intended(k: int) -> float:
    """The EV the scripted simulator means for the k-th subject token."""
    return round(10 * ((3 * k) % 10 + 0.5) / 11, 6)


def value_alternatives(k: int, prefix: str = "") -> dict[str, float]:
    a = intended(k) / 10  # P("10"); P("0") = 1 - a; EV = 10a
    return {prefix + "0": LN(1 - a) + LN(0.9), prefix + "10": LN(a) + LN(0.9), prefix + "unknown": LN(0.1)}


def scripted_echo(text: str, **tok_kw):
    """An echo response that puts value_alternatives(k) at the k-th 'unknown' of the target block, located the
    way the reference does it (token 'unknown' right after a TAB token, after the last '<start>'), not by our
    offsets. Other positions get a generic non-digit distribution."""
    tokens, offsets = tokenize(text, **tok_kw)
    block = max(i for i in range(1, len(tokens)) if tokens[i] == "start" and tokens[i - 1] == "<")
    tops, k = [], 0
    for i, t in enumerate(tokens):
        if i > block and t == "unknown" and tokens[i - 1] == "\t":
            tops.append(value_alternatives(k))
            k += 1
        elif i > block and t == "\tunknown":
            tops.append(value_alternatives(k, "\t"))
            k += 1
        elif i > block and t.endswith("\tunknown"):  # the straddling token: its alternatives are useless
            tops.append({t: -0.1, "0": -3.0})
            k += 1
        else:
            tops.append({} if i == 0 else {t: -0.5, " the": -1.5})
    return tokens, offsets, tops


TRICKY = ["Hello", " world", "\n", "\t", "<", " café", "日本", " a\tb", "\n\n", ">", " unknown", "0", " end", "."]


def test_echo_alignment_realistic_tokenisation():
    p = build_simulator_prompt(EXPL, TRICKY)
    res = align_prompt_logprobs(p, *scripted_echo(p.text))
    assert res["flags"] == ["ok"] * len(TRICKY)
    assert res["expected_values"] == pytest.approx([intended(k) for k in range(len(TRICKY))])
    assert res["n_merged"] == 0


def test_echo_alignment_merged_tab_unknown():
    p = build_simulator_prompt(EXPL, TRICKY)
    tokens, offsets, tops = scripted_echo(p.text, merge_tab_unknown=True)
    assert sum(t == "\tunknown" for t in tokens) >= len(TRICKY)
    res = align_prompt_logprobs(p, tokens, offsets, tops)
    assert res["flags"] == ["ok"] * len(TRICKY) and res["n_merged"] == len(TRICKY)
    assert res["expected_values"] == pytest.approx([intended(k) for k in range(len(TRICKY))])
    # A simulator whose vocabulary never joins TAB and number (cl100k-like): the value is not observable.
    tops = [{"\t": -0.2, "\tun": -2.0} if t == "\tunknown" else top for t, top in zip(tokens, tops)]
    res = align_prompt_logprobs(p, tokens, offsets, tops)
    assert res["flags"][-1] == "unaligned" and math.isnan(res["expected_values"][-1])


def test_unaligned_position_is_flagged_not_shifted():
    p = build_simulator_prompt(EXPL, TRICKY)
    tokens, offsets, tops = scripted_echo(p.text, straddle="<")
    assert "<\tunknown" in tokens
    res = align_prompt_logprobs(p, tokens, offsets, tops)
    j = TRICKY.index("<")
    assert res["flags"][j] == "unaligned" and math.isnan(res["expected_values"][j]) and res["distributions"][j] == {}
    assert res["flags"].count("unaligned") == 1
    others = [k for k in range(len(TRICKY)) if k != j]
    assert [res["expected_values"][k] for k in others] == pytest.approx([intended(k) for k in others])


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_echo_alignment_with_openai_encodings(encoding):
    from autointerp.prompts.tokens import get_encoding

    enc = get_encoding(encoding)
    p = build_simulator_prompt(EXPL, TRICKY)
    ids = enc.encode(p.text, disallowed_special=())
    text, offsets = enc.decode_with_offsets(ids)
    assert text == p.text
    tokens = [enc.decode_single_token_bytes(i).decode("utf-8", "replace") for i in ids]
    res = align_prompt_logprobs(p, tokens, offsets, [{"5": -0.1, "x": -1.0}] * len(tokens))
    assert res["flags"] == ["ok"] * len(TRICKY) and res["expected_values"] == [5.0] * len(TRICKY)


def test_offsets_that_disagree_with_the_text_are_unaligned():
    # A server reporting byte offsets instead of characters: everything after "café" is off by one byte.
    p = build_simulator_prompt(EXPL, ["red", " café", " blue"])
    tokens, offsets, tops = scripted_echo(p.text)
    cafe = p.text.index("café")
    offsets = [o + 1 if o > cafe else o for o in offsets]
    res = align_prompt_logprobs(p, tokens, offsets, tops)
    assert res["flags"] == ["ok", "unaligned", "unaligned"]
    assert res["expected_values"][0] == pytest.approx(intended(0))


def test_no_digit_gives_zero_and_flag():
    p = build_simulator_prompt(EXPL, ["red", " fire"])
    tokens, offsets, tops = scripted_echo(p.text)
    last = max(i for i, t in enumerate(tokens) if t == "unknown")
    tops[last] = {" the": -0.1, "unknown": -1.0}
    res = align_prompt_logprobs(p, tokens, offsets, tops)
    assert res["flags"] == ["ok", "no_digit"]
    assert res["expected_values"] == [pytest.approx(intended(0)), 0.0] and res["distributions"][1] == {}


# --- chat transport -------------------------------------------------------------------------------------------


def _chat_cases():
    return sorted(RESPONSES.glob("chat_*.json"))


@pytest.mark.parametrize("path", _chat_cases(), ids=lambda p: p.stem)
def test_chat_transport_recorded_responses(path):
    from autointerp.llm.client import _parse_chat  # the client's own parsing of the response body

    case = json.loads(path.read_text(encoding="utf-8"))
    parsed = _parse_chat(case["response"])
    res = parse_chat_simulation(case["subject_tokens"], parsed["text"], parsed["logprobs"])
    assert res["flags"] == case["expected_flags"], case["description"]
    want = [math.nan if v is None else v for v in case["expected_values"]]
    assert res["expected_values"] == pytest.approx(want, nan_ok=True, abs=1e-9)
    assert res["n_extra_lines"] == case["expected_extra_lines"]


def test_chat_transport_cases_cover_the_brief():
    names = {p.stem for p in _chat_cases()}
    assert {"chat_clean", "chat_skipped_line", "chat_rewritten_token", "chat_merged_tokens"} <= names


def test_chat_line_without_digit_and_truncated_reply():
    text = "red\tx\n blue\t"
    logprobs = [{"token": t, "logprob": 0.0, "top_logprobs": top} for t, top in
                [("red", {}), ("\t", {}), ("x", {"x": -0.1, "y": -2.0}), ("\n", {}), (" blue", {}), ("\t", {})]]
    res = parse_chat_simulation(["red", " blue", " green"], text, logprobs)
    assert res["flags"] == ["no_digit", "unaligned", "unaligned"]  # " blue" has no value token; " green" missing
    assert res["expected_values"][0] == 0.0


def test_generated_offsets_resync_after_split_character():
    text = "é\t5\nb\t1"
    offs = generated_offsets(text, ["\ufffd", "\ufffd", "\t", "5", "\n", "b", "\t", "1"])
    assert offs == [None, None, 1, 2, 3, 4, 5, 6]
    assert generated_offsets("ab", ["a", "b"]) == [0, 1]


# --- serialisation --------------------------------------------------------------------------------------------


def test_sequence_simulation_round_trip():
    sim = SequenceSimulation(["a", "b", "c"], [2.5, math.nan, 0.0], [{0: 0.5, 5: 0.5}, {}, {}],
                             ["ok", "unaligned", "no_digit"], n_merged=1, meta={"cache_key": "k"})
    d = sim.to_dict()
    assert d["expected_values"] == [2.5, None, 0.0] and d["distributions"][0] == {"0": 0.5, "5": 0.5}
    json.dumps(d, allow_nan=False)  # strict JSON
    back = SequenceSimulation.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d and math.isnan(back.expected_values[1]) and back.distributions[0] == {0: 0.5, 5: 0.5}
    assert sim.counts == {"n_tokens": 3, "n_ok": 1, "n_no_digit": 1, "n_unaligned": 1, "n_merged": 1,
                          "n_extra_lines": 0}
    with pytest.raises(ValueError):
        SequenceSimulation(["a"], [1.0], [{}], ["weird"])


# --- end to end through the loopback server -------------------------------------------------------------------


def test_end_to_end_prompt_logprobs(loopback, make_client):
    def script(path, body):
        if path != "/v1/completions":
            return None
        tokens, offsets, tops = scripted_echo(body["prompt"])
        lp = {"tokens": tokens, "text_offset": offsets,
              "token_logprobs": [None] + [-0.5] * (len(tokens) - 1),
              "top_logprobs": [None] + tops[1:]}
        return {"id": "cmpl", "object": "text_completion", "model": body["model"],
                "choices": [{"index": 0, "text": body["prompt"], "logprobs": lp, "finish_reason": "length"}],
                "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0, "total_tokens": len(tokens)}}

    loopback.script = script
    client = make_client("simulator")
    seqs = [["Green", " smoke", ",", " and"], TRICKY, []]
    sims = asyncio.run(simulate_sequences(client, EXPL, seqs))
    assert [s.tokens for s in sims] == seqs
    for s, seq in zip(sims, seqs):
        assert s.flags == ["ok"] * len(seq)
        assert s.expected_values == pytest.approx([intended(k) for k in range(len(seq))])
    assert loopback.count("/v1/completions") == 2  # the empty sequence needs no call
    body = loopback.requests[0].body
    assert (body["echo"], body["max_tokens"], body["logprobs"]) == (True, 0, 15)


def test_end_to_end_chat_logprobs(loopback, make_client):
    case = json.loads((RESPONSES / "chat_skipped_line.json").read_text(encoding="utf-8"))
    loopback.script = lambda path, body: case["response"] if path == "/v1/chat/completions" else None
    client = make_client("simulator", model="gpt-4o-mini")
    sim = asyncio.run(simulate_sequence(client, EXPL, case["subject_tokens"], mode="chat_logprobs"))
    assert sim.flags == case["expected_flags"] and sim.n_unaligned == 1 and sim.mode == "chat_logprobs"
    body = loopback.requests[0].body
    assert body["temperature"] == 0 and body["logprobs"] is True and body["top_logprobs"] == 15
    assert body["max_tokens"] == 8 * len(case["subject_tokens"]) + 50
    assert body["messages"] == build_chat_simulation_messages(EXPL, case["subject_tokens"])


def test_failed_request_raises(loopback, make_client):
    loopback.add_faults("400", 1)
    client = make_client("simulator")
    with pytest.raises(Exception, match="400"):
        asyncio.run(simulate_sequences(client, EXPL, [["a"]]))
    with pytest.raises(ValueError, match="mode"):
        asyncio.run(simulate_sequences(client, EXPL, [["a"]], mode="bogus"))


# --- the real SmolLM2 tokenizer through the embedded engine ---------------------------------------------------


@pytest.mark.slow
def test_smollm2_engine_alignment(tmp_path):
    """Every placeholder aligns on the embedded engine's real echo output (tiny random Llama, SmolLM2 tokenizer)."""
    torch = pytest.importorskip("torch")
    from test_local_engine import _load_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from autointerp.engine import LocalEngine

    tok = _load_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).eval().save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    engine = LocalEngine(tmp_path, cache_entries=0)
    p = build_simulator_prompt(EXPL, TRICKY + ["\t\t", " 10", "\u00e9t\u00e9"])
    out = engine.prompt_logprobs(p.text, 15)
    res = align_prompt_logprobs(p, out.tokens, out.text_offset, out.top_logprobs)
    assert "unaligned" not in res["flags"]
    first = {o: i for i, o in reversed(list(enumerate(out.text_offset)))}
    for u, ev, flag in zip(p.unknown_offsets, res["expected_values"], res["flags"]):
        assert out.tokens[first[u]].startswith("unk")
        assert ev == pytest.approx(expected_value(out.top_logprobs[first[u]])[0])
