"""Writes the chat-transport response fixtures in this folder (run: python make_chat_responses.py).

The responses are hand-constructed in the shape of OpenAI chat completions with ``logprobs=True,
top_logprobs=15`` (o200k-like tokenisation: a token's leading space is part of it, TAB and newline are separate
tokens, "10" is one token), not recorded from a live API (no network here). Each file also stores what the
parser must produce, computed here from the intended per-line value distributions, not with the library.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPLANATION = "words related to colors and nothing else"
TOKENS = ["Green", " smoke", ",", " and", " yellow", " flames", "\n", " café"]


def esc(t: str) -> str:
    return t.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def value_dist(i: int) -> dict[str, float]:
    """Intended value distribution of line i (probabilities, some mass on non-digits)."""
    table = [{"9": 0.6, "10": 0.3, "8": 0.05}, {"0": 0.9, "1": 0.05}, {"0": 0.99}, {"0": 0.97, "2": 0.02},
             {"10": 0.5, "9": 0.4, "7": 0.05}, {"0": 0.8, "3": 0.15}, {"0": 0.7, "5": 0.2}, {"0": 0.6, "4": 0.3}]
    return table[i % len(table)]


def ev(dist: dict[str, float]) -> float:
    s = sum(dist.values())
    return sum(int(k) * p / s for k, p in dist.items())


def entry(tok: str, top: dict[str, float] | None = None, raw: bytes | None = None) -> dict:
    top = top or {tok: 0.0}
    lp = top.get(tok, max(top.values()))
    return {"token": tok, "logprob": lp, "bytes": list(raw if raw is not None else tok.encode()),
            "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode())} for k, v in top.items()]}


def field_tokens(field: str) -> list[tuple[str, bytes]]:
    if field == " café":  # a multi-byte character split across tokens: the API shows U+FFFD, bytes are exact
        return [(" caf", b" caf"), ("\ufffd", b"\xc3"), ("\ufffd", b"\xa9")]
    return [(field, field.encode())]


def build(lines: list[tuple[str, int | None]], *, prelude: tuple[str, ...] = (), postlude: tuple[str, ...] = (),
          merged_tab: bool = False) -> dict:
    """lines: (token field as written, index of the intended distribution or None for a written value "0")."""
    content, text = [], ""
    for raw in prelude:
        content.append(entry(raw))
        text += raw
    for n, (fld, di) in enumerate(lines):
        for t, raw in field_tokens(fld):
            content.append(entry(t, raw=raw))
        dist = value_dist(di) if di is not None else {"0": 1.0}
        best = max(dist, key=dist.get)
        top = {k: math.log(p) for k, p in dist.items()}
        rest = 1 - sum(dist.values())  # the remaining mass goes to a non-digit alternative
        top[" "] = math.log(rest) if rest > 1e-9 else -20.0
        if merged_tab:
            content.append(entry("\t" + best, {"\t" + k: v for k, v in top.items()}))
        else:
            content.append(entry("\t"))
            content.append(entry(best, top))
        text += fld + "\t" + best
        if n < len(lines) - 1:
            content.append(entry("\n"))
            text += "\n"
    for raw in postlude:
        content.append(entry(raw))
        text += raw
    return {"id": "chatcmpl-fixture", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": {"content": content}}],
            "usage": {"prompt_tokens": 1234, "completion_tokens": len(content), "total_tokens": 1234 + len(content)}}


def main() -> None:
    all_lines = [(esc(t), i) for i, t in enumerate(TOKENS)]
    evs = [ev(value_dist(i)) for i in range(len(TOKENS))]
    n = len(TOKENS)

    def write(name, description, lines, flags, values, extra, **kw):
        doc = {"description": description, "explanation": EXPLANATION, "subject_tokens": TOKENS,
               "response": build(lines, **kw), "expected_flags": flags,
               "expected_values": [None if v is None else round(v, 12) for v in values],
               "expected_extra_lines": extra}
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    write("chat_clean", "every line present, in order, exactly as given", all_lines, ["ok"] * n, evs, 0)
    stripped = [(f.strip() if i in (1, 3) else f, d) for i, (f, d) in enumerate(all_lines)]
    write("chat_stripped_spaces", "the model dropped the leading space of ' smoke' and ' and' (still aligned)",
          stripped, ["ok"] * n, evs, 0)
    skipped = [x for i, x in enumerate(all_lines) if i != 2]
    write("chat_skipped_line", "the line for ',' (index 2) is missing: that token is unaligned, the rest keep "
          "their own values", skipped, ["ok", "ok", "unaligned"] + ["ok"] * (n - 3),
          evs[:2] + [None] + evs[3:], 0)
    rewritten = [("Yellow" if i == 4 else f, d) for i, (f, d) in enumerate(all_lines)]
    write("chat_rewritten_token", "' yellow' rewritten as 'Yellow': unaligned (its value is not trusted)",
          rewritten, ["ok"] * 4 + ["unaligned"] + ["ok"] * (n - 5), evs[:4] + [None] + evs[5:], 1)
    merged = [(" smoke,", 1) if i == 1 else x for i, x in enumerate(all_lines) if i != 2]
    write("chat_merged_tokens", "' smoke' and ',' merged into one line ' smoke,': both unaligned", merged,
          ["ok", "unaligned", "unaligned"] + ["ok"] * (n - 3), evs[:1] + [None, None] + evs[3:], 1)
    extra = all_lines[:3] + [(" extra", 5)] + all_lines[3:]
    write("chat_fenced_extra_line", "reply wrapped in a code fence, with one inserted line ' extra': the fence "
          "lines have no TAB and are ignored, the inserted line counts as extra", extra,
          ["ok"] * n, evs, 1, prelude=("```", "\n"), postlude=("\n", "```"))
    write("chat_merged_tab_value", "a tokenizer that merges the TAB with the value ('\\t9'): read from the "
          "TAB-prefixed alternatives", all_lines, ["ok"] * n, evs, 0, merged_tab=True)


if __name__ == "__main__":
    main()
