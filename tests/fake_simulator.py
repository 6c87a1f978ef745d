"""A scripted reply for the loopback server that behaves like a (very dumb) simulator: for echo completions it
returns digit distributions at every position, derived deterministically from the explanation and the token
before each position, so simulated scores are finite and differ between explanations."""

from __future__ import annotations

import hashlib
import math
import re

_TOKENS = re.compile(r"[A-Za-z]+|\d+|\s|[^\sA-Za-z\d]")  # every character falls in exactly one token


def _p(*parts: str) -> float:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:4], "big") / 2**32


def simulator_script(path: str, body: dict):
    if path != "/v1/completions" or not body.get("echo"):
        return None
    prompt = body["prompt"]
    toks = _TOKENS.findall(prompt)
    assert "".join(toks) == prompt
    explanation = prompt.rsplit("the main thing this neuron does is find", 1)[-1].split("<|endofprompt|>")[0]
    offsets, pos = [], 0
    for t in toks:
        offsets.append(pos)
        pos += len(t)
    n = int(body.get("logprobs") or 0)
    tops, lps = [None], [None]
    for i in range(1, len(toks)):
        high = _p(explanation, toks[i - 2] if i >= 2 else "")
        dist = {"0": max(1e-6, 1 - high), "10": max(1e-6, high * 0.7), "5": max(1e-6, high * 0.3), "the": 0.01}
        top = {k: math.log(v) for k, v in sorted(dist.items(), key=lambda kv: -kv[1])[:n]}
        tops.append(top)
        lps.append(top.get(toks[i], -20.0))
    return {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "text": prompt, "finish_reason": "length",
                         "logprobs": {"tokens": toks, "text_offset": offsets, "token_logprobs": lps,
                                      "top_logprobs": tops}}],
            "usage": {"prompt_tokens": len(toks), "completion_tokens": 0, "total_tokens": len(toks)}}


_CHAT_MARK = "try to predict how it will fire on each token"


def chat_simulator_script(path: str, body: dict):
    """Chat-transport simulator: one ``token<TAB>digit`` line per token of the last user turn (after
    ``Tokens:``), with a digit distribution per value token in the logprobs, derived from the explanation and
    the token; other chat calls (explanations) get the loopback's default reply."""
    messages = body.get("messages") or []
    if path != "/v1/chat/completions" or not messages or _CHAT_MARK not in str(messages[0].get("content", "")):
        return None
    last = str(messages[-1]["content"])
    explanation = last.split("behavior:", 1)[-1].split("\nTokens:\n", 1)[0]
    tokens = last.split("\nTokens:\n", 1)[1].split("\n")
    n = int(body.get("top_logprobs") or 0)
    text, content = "", []
    for i, tok in enumerate(tokens):
        high = _p(explanation, tok)
        digit = "9" if high > 0.8 else "0"
        dist = {"0": max(1e-6, 1 - high), "9": max(1e-6, high * 0.7), "5": max(1e-6, high * 0.3)}
        tops = [{"token": k, "logprob": math.log(v)} for k, v in sorted(dist.items(), key=lambda kv: -kv[1])][:n]
        for piece, top in ((tok, None), ("\t", None), (digit, tops), ("\n" if i < len(tokens) - 1 else "", None)):
            if not piece:
                continue
            text += piece
            entry = top or [{"token": piece, "logprob": 0.0}]
            lp = next((e["logprob"] for e in entry if e["token"] == piece), -20.0)
            content.append({"token": piece, "logprob": lp, "top_logprobs": entry})
    usage = {"prompt_tokens": 0, "completion_tokens": len(content), "total_tokens": len(content)}
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": {"content": content}}], "usage": usage}


def simulators_script(path: str, body: dict):
    """Both transports: echo completions (``simulator_script``) and chat simulations (``chat_simulator_script``)."""
    out = simulator_script(path, body)
    return out if out is not None else chat_simulator_script(path, body)
