"""Tiny random-weight subject models for fast offline tests (stand-ins live only in tests)."""

from __future__ import annotations

import numpy as np


def word_tokenizer(n_words: int = 96):
    """A whitespace word-level tokenizer built in memory (no files, no network)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>"] + [f"w{i}" for i in range(n_words - 1)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")


def tiny_llama(seed: int = 0, *, layers: int = 2, d_mlp: int = 48, vocab: int = 96):
    """(hf_model, tokenizer) of a 2-layer Llama with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=d_mlp, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval(), word_tokenizer(vocab)


def tiny_subject(seed: int = 0, **kw):
    from autointerp.extract.subject_models import wrap_hf_model

    hf, tok = tiny_llama(seed, **kw)
    return wrap_hf_model(hf, tok, name="tiny-llama")


def random_token_ids(n: int, length: int, vocab: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, vocab, size=(n, length), dtype=np.int64)


def brute_force_activations(model, token_ids: np.ndarray, hook_template: str, layer: int) -> np.ndarray:
    """All activations (N, T, d) of one hook, via the plain Hugging Face module (no transformer-lens)."""
    import torch

    store = []
    mlp = model.bridge.original_model.model.layers[layer].mlp
    handle = mlp.down_proj.register_forward_hook(lambda m, args, out: store.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model.bridge.original_model(torch.as_tensor(token_ids))
    finally:
        handle.remove()
    return store[0].numpy()
