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
