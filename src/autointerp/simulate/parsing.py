"""Reading simulator logprobs: the digit expected-value rule and alignment of predictions to subject tokens.

Alignment is by character offsets, never by token equality, and never by position counting: a prediction is read
only where a simulator token starts exactly where the value belongs, and that token's text is checked against the
prompt (or the generated text). Anything else is flagged ``unaligned`` with EV NaN, so one odd position can never
shift the values of the others.

Prompt logprobs (echo). For subject token j, ``u_j`` is the offset of its ``unknown``:

* a token starts at ``u_j`` (the usual case, whatever the simulator did with the subject token or the TAB):
  its ``top_logprobs`` entry is the distribution of what follows the TAB; digits are the alternatives spelled
  exactly ``"0"``..``"10"`` (after the TAB a value is a bare number; ``" 5"`` would be a different format).
* no token starts at ``u_j`` but one starts at the TAB, with more text after it (``"\\tunknown"``, ``"\\tun"``):
  its alternatives are distributions over TAB-prefixed strings, so the digits are the alternatives spelled
  exactly ``"\\t0"``..``"\\t10"`` (renormalised among themselves). If there are none (tokenisers that never merge
  a TAB with a number, e.g. cl100k), the value is not observable from this call: ``unaligned``, not ``no_digit``.
* otherwise (a token straddles ``u_j``, or the response is short): ``unaligned``.

Chat logprobs. Lines ``token<TAB>value`` of the reply are matched to the subject tokens by a longest common
subsequence on the escaped tokens with surrounding whitespace stripped (models often drop leading spaces); the
value of a matched line is read as above at the offset after the line's last TAB. Subject tokens with no matching
line (skipped, merged or rewritten by the model) are ``unaligned``; lines matching no token are counted as extra.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from autointerp.simulate.prompts import SimulatorPrompt, escape_token

DIGITS = tuple(str(k) for k in range(11))
OK, NO_DIGIT, UNALIGNED = "ok", "no_digit", "unaligned"
FLAGS = (OK, NO_DIGIT, UNALIGNED)
BYTES_PREFIX = "bytes:"


def expected_value(top_logprobs: Mapping[str, float] | None, *, prefix: str = "") -> tuple[float, dict[int, float]]:
    """EV over the alternatives spelled exactly ``prefix + "0"`` … ``prefix + "10"``: p = exp(logprob),
    renormalised over those digits, EV = Σ k·p_k. No digit: ``(0.0, {})`` (the reference's rule)."""
    probs: dict[int, float] = {}
    for tok, lp in (top_logprobs or {}).items():
        if tok.startswith(prefix) and tok[len(prefix):] in DIGITS and lp is not None and math.isfinite(lp):
            k = int(tok[len(prefix):])
            probs[k] = probs.get(k, 0.0) + math.exp(lp)
    total = sum(probs.values())
    if total <= 0:
        return 0.0, {}
    dist = {k: p / total for k, p in sorted(probs.items())}
    return sum(k * p for k, p in dist.items()), dist


def _token_bytes(token: str) -> bytes:
    """A token's bytes; OpenAI's ``bytes:\\xe6\\x97`` spelling for partial UTF-8 is decoded."""
    if token.startswith(BYTES_PREFIX):
        try:
            return token[len(BYTES_PREFIX):].encode("latin-1").decode("unicode_escape").encode("latin-1")
        except (UnicodeError, ValueError):
            return b""  # not the spelling we know: matches nothing, so the position is flagged, not guessed
    return token.encode("utf-8", "surrogatepass")


def _token_at(text: str, offset: int, token: str) -> bool:
    """Does ``token`` spell the text at ``offset``? (guards against offsets that do not mean what we think)."""
    if 0 <= offset <= len(text) and text.startswith(token, offset) and token:
        return True
    b = _token_bytes(token)
    return bool(b) and text[offset:offset + len(b)].encode("utf-8").startswith(b)


def first_token_at(offsets: Sequence[int | None]) -> dict[int, int]:
    """Offset -> index of the first token starting there (several tokens share one offset when a character is
    split into bytes)."""
    first: dict[int, int] = {}
    for i, o in enumerate(offsets):
        if o is not None:
            first.setdefault(o, i)
    return first


def read_value(text: str, offset: int, first: Mapping[int, int], tokens: Sequence[str],
               tops: Sequence[Mapping[str, float] | None]) -> tuple[float, dict[int, float], str, bool]:
    """The prediction for the value that belongs at ``offset`` of ``text`` (rules in the module docstring).

    ``first`` is ``first_token_at(offsets)``. Returns (EV, distribution, flag, merged), where merged says the
    value was read from a token starting at the TAB.
    """
    i = first.get(offset)
    if i is not None:
        if not _token_at(text, offset, tokens[i]):
            return math.nan, {}, UNALIGNED, False
        ev, dist = expected_value(tops[i])
        return ev, dist, (OK if dist else NO_DIGIT), False
    i = first.get(offset - 1)
    if (i is not None and tokens[i].startswith("\t") and len(tokens[i]) > 1 and text[offset - 1:offset] == "\t"
            and _token_at(text, offset - 1, tokens[i])):
        ev, dist = expected_value(tops[i], prefix="\t")
        if dist:
            return ev, dist, OK, True
    return math.nan, {}, UNALIGNED, False


def align_prompt_logprobs(prompt: SimulatorPrompt, tokens: Sequence[str], text_offsets: Sequence[int],
                          top_logprobs: Sequence[Mapping[str, float] | None]) -> dict[str, Any]:
    """Per subject token of ``prompt``: EV, distribution and flag from an echo response; plus ``n_merged``."""
    if not (len(tokens) == len(text_offsets) == len(top_logprobs)):
        raise ValueError("echo response arrays differ in length")
    first = first_token_at(text_offsets)
    out: dict[str, Any] = {"expected_values": [], "distributions": [], "flags": [], "n_merged": 0}
    for u in prompt.unknown_offsets:
        ev, dist, flag, merged = read_value(prompt.text, u, first, tokens, top_logprobs)
        out["expected_values"].append(ev)
        out["distributions"].append(dist)
        out["flags"].append(flag)
        out["n_merged"] += merged
    return out


def generated_offsets(text: str, tokens: Sequence[str]) -> list[int | None]:
    """Character offset of each generated token in ``text`` (chat logprobs give tokens, not offsets).

    Tokens are laid end to end; a token that does not spell the text at the running position (a multi-byte
    character split across tokens, shown as ``bytes:…`` or U+FFFD) gets None, and the position resyncs at the
    first later token that spells the text within the characters such a run can cover.
    """
    out: list[int | None] = []
    pos, pending = 0, 0
    for tok in tokens:
        if pending == 0 and text.startswith(tok, pos):
            out.append(pos)
            pos += len(tok)
            continue
        if pending:
            hit = next((p for p in range(pos, min(len(text), pos + pending) + 1) if tok and text.startswith(tok, p)),
                       None)
            if hit is not None:
                out.append(hit)
                pos, pending = hit + len(tok), 0
                continue
        out.append(None)
        pending += max(1, len(_token_bytes(tok)))
    return out


def _lcs_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of one longest common subsequence of a and b (equal elements, order kept)."""
    n, m = len(a), len(b)
    dp = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, nxt = dp[i], dp[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = nxt[j + 1] + 1 if a[i] == b[j] else max(nxt[j], row[j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def parse_chat_simulation(subject_tokens: Sequence[str], text: str,
                          logprobs: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Per subject token: EV, distribution and flag from a chat reply with logprobs; plus ``n_merged`` and
    ``n_extra_lines`` (lines with a TAB that matched no subject token)."""
    logprobs = list(logprobs or [])
    gen_tokens = [str(e["token"]) for e in logprobs]
    tops = [e.get("top_logprobs") or {} for e in logprobs]
    first = first_token_at(generated_offsets(text, gen_tokens))
    lines: list[tuple[str, tuple[float, dict[int, float], str, bool]]] = []
    start = 0
    for line in text.split("\n"):
        body = line[:-1] if line.endswith("\r") else line
        tab = body.rfind("\t")
        if tab >= 0:
            lines.append((body[:tab].strip(), read_value(text, start + tab + 1, first, gen_tokens, tops)))
        start += len(line) + 1
    want = [escape_token(t).strip() for t in subject_tokens]
    n = len(subject_tokens)
    out: dict[str, Any] = {"expected_values": [math.nan] * n, "distributions": [{} for _ in range(n)],
                           "flags": [UNALIGNED] * n, "n_merged": 0}
    pairs = _lcs_pairs(want, [key for key, _ in lines])
    for j, k in pairs:
        ev, dist, flag, merged = lines[k][1]
        out["expected_values"][j], out["distributions"][j], out["flags"][j] = ev, dist, flag
        out["n_merged"] += merged
    out["n_extra_lines"] = len(lines) - len(pairs)
    return out
