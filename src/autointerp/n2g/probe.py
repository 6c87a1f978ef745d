"""Reading one neuron's activations (and the subject's next-token logits) from token-id batches.

Every forward pass of N2G goes through ``NeuronProbe``: token ids in, the neuron's activation at every
position out. Inputs are token ids, never re-tokenised text (reference bug 9), and nothing is prepended
(the pipeline's records are corpus windows without BOS, so the probe sees exactly what extraction saw).
An explicit all-ones attention mask is passed, so a masking token that equals the tokenizer's pad id is
never turned into an attention mask by the bridge. Rows of one batch may be right-padded: for a causal
model the real positions of a row do not see later (padded) positions, and callers only read real
positions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

DEFAULT_HOOK = "blocks.{layer}.mlp.hook_post"


def neutral_token_id(tokenizer) -> int:
    """The token used to mask a position in saliency: the tokenizer's pad token, else its eos, else unk,
    else bos. Never a hard-coded id (reference bug 6: id 1 is ``"`` in GPT-2).

    SmolLM2: pad ``<|im_end|>`` (2). GPT-2 (no pad token): eos ``<|endoftext|>`` (50256), which is also
    what transformer-lens uses as its pad/BOS. The tiny test tokenizer: ``<unk>`` (0).
    """
    for name in ("pad_token_id", "eos_token_id", "unk_token_id", "bos_token_id"):
        tid = getattr(tokenizer, name, None)
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has no pad, eos, unk or bos token: pass N2GConfig(mask_token_id=...)")


@dataclass
class ForwardLog:
    """What the probe ran: count, rows, tokens and seconds of forward passes, plus every batch shape."""

    n_passes: int = 0
    n_rows: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    shapes: list = field(default_factory=list)  # (rows, length, stop_at_layer or None)

    def add(self, rows: int, length: int, stop: int | None, seconds: float) -> None:
        self.n_passes += 1
        self.n_rows += rows
        self.n_tokens += rows * length
        self.seconds += seconds
        self.shapes.append((rows, length, stop))


class NeuronProbe:
    """One MLP neuron of a ``LoadedModel`` (``autointerp.extract.subject_models``).

    ``activations(ids)`` runs the bridge only up to the neuron's block (``stop_at_layer``), so early-layer
    neurons are cheap; ``logits(ids)`` runs the whole model (used by the augmentation substitutes).
    Batches larger than ``max_batch_rows`` rows are split (same results, bounded memory).
    """

    def __init__(self, model, layer: int, neuron: int, hook: str = DEFAULT_HOOK, *, device: str = "cpu",
                 max_batch_rows: int = 2048):
        self.model = model
        self.layer = int(layer)
        self.neuron = int(neuron)
        self.hook_name = hook.format(layer=layer)
        model.check_hook(hook, [layer])
        if not 0 <= neuron < model.d_mlp:
            raise ValueError(f"neuron {neuron} out of range (d_mlp = {model.d_mlp})")
        self.device = device
        self.max_batch_rows = int(max_batch_rows)
        self.tokenizer = model.tokenizer
        self.log = ForwardLog()

    def _stop(self) -> int | None:
        return self.layer + 1 if self.layer + 1 < self.model.n_layers else None

    def activations(self, ids) -> np.ndarray:
        """(B, T) int token ids -> (B, T) float64 activations of the neuron."""
        import torch

        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError(f"expected a (batch, length) id array, got shape {ids.shape}")
        out = []
        store: dict = {}

        def hook(tensor, hook=None):
            store["a"] = tensor[:, :, self.neuron].detach().to("cpu", torch.float64).numpy()

        stop = self._stop()
        for start in range(0, len(ids), self.max_batch_rows):
            batch = torch.as_tensor(ids[start:start + self.max_batch_rows], device=self.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                self.model.bridge.run_with_hooks(batch, fwd_hooks=[(self.hook_name, hook)], return_type=None,
                                                 stop_at_layer=stop, attention_mask=torch.ones_like(batch))
            self.log.add(len(batch), batch.shape[1], stop, time.perf_counter() - t0)
            out.append(store.pop("a"))
        return np.concatenate(out) if out else np.zeros((0, ids.shape[1]))

    def logits(self, ids) -> np.ndarray:
        """(B, T) token ids -> (B, T, vocab) float32 logits of the whole subject model."""
        import torch

        batch = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = self.model.bridge(batch, return_type="logits", attention_mask=torch.ones_like(batch))
        self.log.add(len(batch), batch.shape[1], None, time.perf_counter() - t0)
        return logits.detach().to("cpu", torch.float32).numpy()
