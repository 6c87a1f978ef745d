"""Token ids -> exact bytes and OpenAI-style token strings, for any Hugging Face tokenizer.

Byte-level BPE tokenizers (GPT-2 style, SmolLM2's included) store each token as a string of "byte characters"
(every byte 0-255 mapped to a printable code point). Inverting that map gives the exact bytes of every token, so
the bytes of a prompt's tokens concatenate to the prompt's UTF-8 bytes exactly. A token whose bytes are not
valid UTF-8 on their own (a multi-byte character split across tokens) gets OpenAI's legacy spelling
``"bytes:\\xe6\\x97"``: the reference simulator parser (``handle_byte_encoding``) reassembles such runs.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

BYTES_PREFIX = "bytes:"


def _byte_level_alphabet() -> dict[str, int]:
    """The GPT-2 byte-level alphabet, inverted: printable character -> the byte it stands for."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1))
        + list(range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1))
    )
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(code): b for b, code in chars.items()}


def token_string(raw: bytes) -> str:
    """A token's display string: its UTF-8 text, or ``bytes:`` + escaped bytes when it is not valid UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        parts = []
        for b in raw:
            if 0x20 <= b < 0x7F and b != 0x5C:  # printable ASCII except the backslash, as the parser expects
                parts.append(chr(b))
            else:
                parts.append(f"\\x{b:02x}")
        return BYTES_PREFIX + "".join(parts)


class TokenTable:
    """Exact bytes and display string for every token id of a model (ids past the tokenizer's vocab map to b"")."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        self.byte_level = _is_byte_level(tokenizer)
        n = max(vocab_size, len(tokenizer))
        raw: list[bytes] = [b""] * n
        special: set[int] = set()
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        alphabet = _byte_level_alphabet() if self.byte_level else None
        vocab = tokenizer.get_vocab()
        for piece, idx in vocab.items():
            if idx >= n:
                continue
            if idx in added:
                raw[idx] = str(added[idx].content).encode("utf-8")
                if getattr(added[idx], "special", False):
                    special.add(idx)
                continue
            if alphabet is not None:
                try:
                    raw[idx] = bytes(alphabet[c] for c in piece)
                    continue
                except KeyError:
                    pass
            raw[idx] = tokenizer.decode([idx]).encode("utf-8")
        for idx in getattr(tokenizer, "all_special_ids", []) or []:
            if 0 <= idx < n:
                special.add(int(idx))
        self.raw = raw
        self.special = frozenset(special)
        self.strings = [token_string(b) for b in raw]

    def bytes_of(self, ids: Sequence[int]) -> bytes:
        return b"".join(self.raw[i] for i in ids)

    def text_of(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Decode ids by their exact bytes (no clean-up of spaces), undecodable bytes replaced."""
        return b"".join(self.raw[i] for i in ids if not (skip_special and i in self.special)).decode(
            "utf-8", errors="replace"
        )


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except Exception:  # pragma: no cover - exotic backends
        return False
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", []) or []]
    return "ByteLevel" in kinds


def char_offsets(text: str, token_bytes: Sequence[bytes]) -> list[int] | None:
    """Character offset in ``text`` where each token starts, from the tokens' bytes.

    A token starting inside a multi-byte character gets that character's offset. None when the tokens' bytes do
    not concatenate to ``text`` (a normalising tokenizer): callers fall back to the tokenizer's offset mapping.
    """
    encoded = text.encode("utf-8")
    if b"".join(token_bytes) != encoded:
        return None
    byte_to_char = [0] * (len(encoded) + 1)
    pos = 0
    for ci, ch in enumerate(text):
        width = len(ch.encode("utf-8"))
        for k in range(width):
            byte_to_char[pos + k] = ci
        pos += width
    byte_to_char[len(encoded)] = len(text)
    offsets, pos = [], 0
    for raw in token_bytes:
        offsets.append(byte_to_char[pos])
        pos += len(raw)
    return offsets
