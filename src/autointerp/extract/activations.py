"""One streaming pass over the corpus that summarises every neuron of every configured layer.

For each neuron it keeps, with memory bounded by the number of neurons (never all token activations):
- the top-k excerpts by the excerpt's maximum activation, with their per-token activation vectors;
- the activation vectors on a seeded random sample of excerpts chosen independently of activation;
- count, sum and sum of squares of token activations (float64) for mean and variance;
- the per-excerpt maximum for every excerpt, in an on-disk memmap (N x d per layer), from which exact
  quantiles are computed at the end (the reference's quantile boundaries; explainer_anchors §1.2).

Ordering is total and deterministic: higher maximum first, ties broken by the smaller excerpt id. Every
piece of the state merges exactly across corpus shards (``merge``), so a huge corpus can be split into
shard jobs whose results combine to the same tables as a single pass.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from autointerp.common.io import atomic_dir, atomic_write_parquet

SCHEMA_VERSION = "1"


class ExtractionError(ValueError):
    """Bad extraction input; the message says what and how to fix it."""


class _HooksDone(Exception):
    """Raised by the last hook of a batch to end the forward pass early (run_with_hooks removes the hooks)."""


@dataclass
class ExtractionSettings:
    layers: list[int]
    hook: str = "blocks.{layer}.mlp.hook_post"
    top_k: int = 20
    random_n: int = 50
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
    seed: int = 0
    batch_size: int = 32


def random_sample_ids(n_excerpts: int, n: int, seed: int) -> np.ndarray:
    """The seeded random sample, in draw order (record splits slice it by position, as the reference does)."""
    if n > n_excerpts:
        raise ExtractionError(
            f"extraction.random_n={n} is larger than the corpus ({n_excerpts} excerpts): lower random_n or "
            "raise corpus.n_excerpts"
        )
    rng = np.random.default_rng([int(seed), 0x5EED])
    return rng.choice(n_excerpts, size=n, replace=False).astype(np.int64)


def order_keys(vals, ids):
    """int64 keys ordering candidates by value (descending), then excerpt id (ascending): larger is better.

    The float32 value's bits are mapped to an order-preserving int32 (negative floats have their magnitude bits
    flipped) in the high half; ``2**31 - 1 - id`` fills the low half, so equal values prefer the smaller id.
    Exact, with no tie left to an unstable sort. NaN counts as -inf; -0.0 as +0.0.
    """
    import torch

    vals = torch.nan_to_num(vals.float(), nan=float("-inf")) + 0.0
    bits = vals.contiguous().view(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (bits.to(torch.int64) << 32) | ((2**31 - 1) - ids.to(torch.int64))


class LayerState:
    """Streaming summary of one layer's neurons (torch tensors on the model's device)."""

    def __init__(self, d: int, k: int, length: int, random_ids: np.ndarray, n_excerpts: int,
                 device="cpu", maxima_dir: str | None = None):
        import torch

        self.d, self.k, self.length = d, k, length
        # The k slots of a neuron are unordered while streaming (entries are only ever overwritten in place);
        # they are sorted once, at the end. ``top_key`` encodes the total order (see order_keys).
        self.top_vals = torch.full((d, k), float("-inf"), device=device)
        self.top_ids = torch.full((d, k), -1, dtype=torch.int64, device=device)
        self.top_key = order_keys(self.top_vals, self.top_ids)
        self.top_acts = torch.zeros((d, k, length), device=device)
        self.random_ids = np.asarray(random_ids, dtype=np.int64)
        self._slot = {int(e): i for i, e in enumerate(self.random_ids)}
        self.rand_acts = torch.zeros((d, len(self.random_ids), length), device=device)
        self.rand_filled = np.zeros(len(self.random_ids), dtype=bool)
        self.count = 0
        self.sum = torch.zeros(d, dtype=torch.float64, device=device)
        self.sumsq = torch.zeros(d, dtype=torch.float64, device=device)
        # Per-excerpt maxima live on disk: N x d float32 stays out of RAM for large corpora.
        if maxima_dir is None:
            self.maxima = np.full((n_excerpts, d), np.nan, dtype=np.float32)
        else:
            fh = tempfile.NamedTemporaryFile(dir=maxima_dir, suffix=".npy", delete=False)
            fh.close()
            self.maxima = np.lib.format.open_memmap(fh.name, mode="w+", dtype=np.float32, shape=(n_excerpts, d))
            self.maxima[:] = np.nan
        self.seen = np.zeros(n_excerpts, dtype=bool)

    # -- streaming ---------------------------------------------------------------------------------
    def update(self, acts, excerpt_ids) -> None:
        """Fold in a batch: ``acts`` (B, T, d) float32, ``excerpt_ids`` (B,) int64 tensor."""
        import torch

        acts = acts.float()
        batch_max = acts.amax(dim=1)  # (B, d)
        ids_np = excerpt_ids.cpu().numpy()
        self.maxima[ids_np] = batch_max.cpu().numpy()
        self.seen[ids_np] = True
        self.count += acts.shape[0] * acts.shape[1]
        # Per-excerpt partial sums in float32 (64 values), accumulated across excerpts in float64.
        self.sum += acts.sum(dim=1).sum(dim=0, dtype=torch.float64)
        self.sumsq += (acts * acts).sum(dim=1).sum(dim=0, dtype=torch.float64)
        for row, eid in enumerate(ids_np):
            slot = self._slot.get(int(eid))
            if slot is not None:
                self.rand_acts[:, slot, :] = acts[row].T
                self.rand_filled[slot] = True
        cand_vals = batch_max.T  # (d, B)
        cand_ids = excerpt_ids.to(self.top_ids.device).unsqueeze(0).expand(self.d, -1)
        # Only the (row, neuron) pairs that enter a top-k are ever copied out of the batch.
        self._merge_top(cand_vals, cand_ids, lambda rows, neurons: acts[rows, :, neurons])

    def _merge_top(self, cand_vals, cand_ids, fetch) -> None:
        """Merge candidates into each neuron's top-k under the total order of ``order_keys``.

        ``fetch(candidate_index, neuron)`` returns the activation vectors (m, T) of the entering candidates.
        Evicted slots are overwritten in place; nothing else moves.
        """
        import torch

        cand_key = order_keys(cand_vals, cand_ids)
        worst = self.top_key.min(dim=1).values
        sel = (cand_key.max(dim=1).values > worst).nonzero().squeeze(1)
        if sel.numel() == 0:
            return
        k = self.k
        keys = torch.cat([self.top_key[sel], cand_key[sel]], dim=1)
        keep = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, keys.topk(k, dim=1, sorted=False).indices, True)
        # Row-major nonzero lists each row's evicted slots and entering candidates in order, and a row has as
        # many of one as of the other: the two lists pair up element by element.
        ev_row, slot = (~keep[:, :k]).nonzero(as_tuple=True)
        in_row, cand = keep[:, k:].nonzero(as_tuple=True)
        rows = sel[ev_row]
        self.top_key[rows, slot] = cand_key[rows, cand]
        self.top_vals[rows, slot] = cand_vals[rows, cand]
        self.top_ids[rows, slot] = cand_ids[rows, cand]
        self.top_acts[rows, slot] = fetch(cand, rows)

    def ordered_top(self):
        """(values, ids, activations) of each neuron's top-k, best first."""
        import torch

        order = torch.argsort(self.top_key, dim=1, descending=True)
        length = self.length
        return (self.top_vals.gather(1, order), self.top_ids.gather(1, order),
                self.top_acts.gather(1, order.unsqueeze(-1).expand(-1, -1, length)))

    def merge(self, other: "LayerState") -> None:
        """Fold another shard's state into this one (disjoint excerpt ids, same random sample)."""
        if not np.array_equal(self.random_ids, other.random_ids):
            raise ExtractionError("cannot merge shards drawn with different random samples")
        if np.any(self.seen & other.seen):
            raise ExtractionError("cannot merge shards that share excerpts")
        self._merge_top(other.top_vals, other.top_ids, lambda slots, neurons: other.top_acts[neurons, slots])
        fill = other.rand_filled & ~self.rand_filled
        self.rand_acts[:, fill, :] = other.rand_acts[:, fill, :]
        self.rand_filled |= other.rand_filled
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.maxima[other.seen] = other.maxima[other.seen]
        self.seen |= other.seen

    # -- output ------------------------------------------------------------------------------------
    def to_table(self, layer: int, quantile_levels, metadata: dict) -> pa.Table:
        if not self.seen.all():
            raise ExtractionError(f"layer {layer}: {int((~self.seen).sum())} excerpts were never seen")
        if not self.rand_filled.all():
            raise ExtractionError(f"layer {layer}: random-sample excerpts missing from every shard")
        n = len(self.seen)
        if n < self.k:
            raise ExtractionError(f"corpus has {n} excerpts, fewer than top_k={self.k}")
        maxima = np.asarray(self.maxima)
        quantiles = np.quantile(maxima, np.asarray(quantile_levels, dtype=np.float64), axis=0).T  # (d, q)
        mean = (self.sum / self.count).cpu().numpy()
        var = np.maximum((self.sumsq / self.count).cpu().numpy() - mean * mean, 0.0)
        d, k, length, r = self.d, self.k, self.length, len(self.random_ids)

        def nested(arr: np.ndarray, inner: int, outer: int) -> pa.Array:
            flat = pa.array(np.ascontiguousarray(arr, dtype=np.float32).reshape(-1))
            return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, inner), outer)

        def fixed(arr: np.ndarray, size: int, typ) -> pa.Array:
            return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(-1), type=typ), size)

        ordered_vals, ordered_ids, ordered_acts = self.ordered_top()
        top_vals = ordered_vals.cpu().numpy()
        columns = {
            "layer": pa.array(np.full(d, layer, dtype=np.int32)),
            "neuron": pa.array(np.arange(d, dtype=np.int32)),
            "max_activation": pa.array(top_vals[:, 0].astype(np.float32)),
            "top_excerpt_ids": fixed(ordered_ids.cpu().numpy(), k, pa.int64()),
            "top_max_activations": fixed(top_vals.astype(np.float32), k, pa.float32()),
            "top_activations": nested(ordered_acts.cpu().numpy(), length, k),
            "random_excerpt_ids": fixed(np.tile(self.random_ids, (d, 1)), r, pa.int64()),
            "random_activations": nested(self.rand_acts.cpu().numpy(), length, r),
            "quantiles": fixed(quantiles.astype(np.float32), len(quantile_levels), pa.float32()),
            "mean": pa.array(mean.astype(np.float64)),
            "variance": pa.array(var.astype(np.float64)),
            "n_tokens": pa.array(np.full(d, self.count, dtype=np.int64)),
        }
        meta = {f"autointerp.{k_}": (v if isinstance(v, str) else json.dumps(v)) for k_, v in metadata.items()}
        meta.update({
            "autointerp.kind": "activations",
            "autointerp.schema_version": SCHEMA_VERSION,
            "autointerp.layer": str(layer),
            "autointerp.quantile_levels": json.dumps([float(q) for q in quantile_levels]),
            "autointerp.quantile_method": "numpy linear interpolation over all per-excerpt maxima",
        })
        return pa.table(columns).replace_schema_metadata(meta)


@dataclass
class ExtractionRun:
    states: dict[int, LayerState]
    total_seconds: float = 0.0
    n_batches: int = 0


def extract(model, token_ids: np.ndarray, settings: ExtractionSettings, *, excerpt_offset: int = 0,
            n_total: int | None = None, device: str = "cpu", maxima_dir: str | None = None) -> ExtractionRun:
    """Run the model over ``token_ids`` (N, T) once, feeding every configured layer's hook to its state.

    ``excerpt_offset``/``n_total`` let a corpus shard use global excerpt ids.
    """
    import torch

    n, length = token_ids.shape
    n_total = n_total if n_total is not None else n
    if n_total < settings.top_k:
        raise ExtractionError(
            f"corpus has {n_total} excerpts, fewer than extraction.top_k={settings.top_k}: raise corpus.n_excerpts "
            "or lower top_k"
        )
    bad = [layer for layer in settings.layers if not 0 <= layer < model.n_layers]
    if bad:
        raise ExtractionError(f"layers {bad} out of range: model {model.name!r} has layers 0..{model.n_layers - 1}")
    model.check_hook(settings.hook, settings.layers)
    rand = random_sample_ids(n_total, settings.random_n, settings.seed)
    states = {
        layer: LayerState(model.d_mlp, settings.top_k, length, rand, n_total, device=device, maxima_dir=maxima_dir)
        for layer in settings.layers
    }
    current = {"ids": None, "pending": set()}

    def make_hook(layer):
        def hook(tensor, hook=None):
            states[layer].update(tensor.detach(), current["ids"])
            current["pending"].discard(layer)
            if not current["pending"]:
                # Every configured hook has fired: the rest of the forward (later blocks, final norm and the
                # unembedding, 49,152 logits per token) would be thrown away. Measured on SmolLM2-135M (all
                # 30 layers, 2 threads): 22.6 s -> 16.0 s for 128 excerpts.
                raise _HooksDone
        return hook

    hooks = [(model.hook_name(settings.hook, layer), make_hook(layer)) for layer in settings.layers]
    run = ExtractionRun(states)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, settings.batch_size):
            batch = torch.as_tensor(token_ids[start:start + settings.batch_size], device=device)
            current["ids"] = torch.arange(start, start + len(batch), dtype=torch.int64) + excerpt_offset
            current["pending"] = set(settings.layers)
            try:
                model.bridge.run_with_hooks(batch, fwd_hooks=hooks, return_type=None)
            except _HooksDone:
                pass
            if current["pending"]:
                raise ExtractionError(f"hooks of layers {sorted(current['pending'])} did not fire "
                                      f"(subject.hook {settings.hook!r})")
            run.n_batches += 1
    run.total_seconds = time.perf_counter() - started
    return run


def bare_forward_seconds(model, token_ids: np.ndarray, batch_size: int, device: str = "cpu") -> float:
    """Time a plain forward pass over the same batches (the benchmark's denominator)."""
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(token_ids), batch_size):
            batch = torch.as_tensor(token_ids[start:start + batch_size], device=device)
            model.bridge(batch, return_type=None)
    return time.perf_counter() - started


def write_layer_shards(run: ExtractionRun, settings: ExtractionSettings, out_paths: dict[int, str],
                       metadata: dict) -> None:
    """Write one Parquet shard per layer, each atomically."""
    for layer, path in out_paths.items():
        table = run.states[layer].to_table(layer, settings.quantiles, {
            **metadata, "hook": settings.hook.format(layer=layer), "top_k": settings.top_k,
            "random_n": settings.random_n, "seed": settings.seed,
        })
        atomic_write_parquet(table, path)


def activations_fix(activations_dir) -> str:
    """How to repair a broken activations folder (used in every error about one)."""
    return f"delete the folder {activations_dir} and rerun extraction (rule extract_activations)"


def layer_shards(activations_dir) -> dict[int, str]:
    """{layer: shard path} from an activations folder's manifest.

    The manifest is read strictly and every shard's Parquet footer is checked (cheap: a few KB each), so a
    truncated, garbage or missing shard is refused here, in one line, before any job reads it.
    """
    from autointerp.common.io import read_json, read_parquet_schema

    folder = Path(activations_dir)
    manifest = folder / "manifest.json"
    fix = activations_fix(folder)
    if not manifest.is_file():
        raise ExtractionError(f"{manifest} is missing: the activations folder is incomplete; {fix}")
    info = read_json(manifest, fix=fix, error=ExtractionError)
    shards = info.get("shards") if isinstance(info, dict) else None
    if not isinstance(shards, dict) or not shards:
        raise ExtractionError(f"{manifest}: no 'shards' map of layer -> file; {fix}")
    version = info.get("schema_version", SCHEMA_VERSION)
    if str(version) != SCHEMA_VERSION:
        raise ExtractionError(f"{manifest}: schema_version {version!r}, this code reads {SCHEMA_VERSION!r}; {fix}")
    out = {}
    for layer, name in shards.items():
        try:
            layer = int(layer)
        except (TypeError, ValueError):
            raise ExtractionError(f"{manifest}: shard key {layer!r} is not a layer number; {fix}") from None
        path = folder / str(name)
        if not path.is_file():
            raise ExtractionError(f"{path} (layer {layer} in {manifest.name}) is missing; {fix}")
        read_parquet_schema(path, fix=fix, error=ExtractionError)
        out[layer] = str(path)
    return out


def run_extraction_job(*, model_dir, corpus_path, out_dir, layers, hook, device="auto", dtype="float32",
                       batch_size=32, extraction: dict, threads: int | None = None) -> dict:
    """The extraction rule: load model and corpus, one pass, write shards + manifest into ``out_dir`` atomically."""
    import shutil

    import torch

    from autointerp.extract.corpus import read_token_ids
    from autointerp.common.snakemake_io import usable_threads
    from autointerp.extract.subject_models import load_prepared_model, model_info, resolve_device

    if threads:
        torch.set_num_threads(usable_threads(threads))
    device = resolve_device(device)
    info = model_info(model_dir)
    layer_list = list(range(info["n_layers"])) if layers == "all" else [int(x) for x in layers]
    bad = [x for x in layer_list if not 0 <= x < info["n_layers"]]
    if bad:
        raise ExtractionError(
            f"subject.layers {bad} out of range: model {info['model']!r} has layers 0..{info['n_layers'] - 1}")
    token_ids = read_token_ids(corpus_path)
    settings = ExtractionSettings(layers=layer_list, hook=hook, top_k=int(extraction["top_k"]),
                                  random_n=int(extraction["random_n"]),
                                  quantiles=tuple(float(q) for q in extraction["quantiles"]),
                                  seed=int(extraction["seed"]), batch_size=int(batch_size))
    model = load_prepared_model(model_dir, device=device, dtype=dtype)
    with atomic_dir(out_dir) as tmp:
        scratch = tmp / ".maxima"
        scratch.mkdir()
        run = extract(model, token_ids, settings, device=device, maxima_dir=str(scratch))
        names = {layer: f"layer{layer:03d}.parquet" for layer in layer_list}
        write_layer_shards(run, settings, {layer: tmp / name for layer, name in names.items()}, {
            "model": info["model"], "n_layers": info["n_layers"], "d_mlp": info["d_mlp"],
            "corpus": Path(corpus_path).name, "excerpt_tokens": int(token_ids.shape[1]),
            "n_excerpts": int(token_ids.shape[0]), "dtype": dtype,
        })
        for state in run.states.values():
            del state.maxima
        shutil.rmtree(scratch)
        summary = {"layers": len(layer_list), "neurons_per_layer": model.d_mlp, "excerpts": int(token_ids.shape[0]),
                   "tokens": int(token_ids.size)}
        # No timings in the manifest (same config, same bytes); the job's log and benchmark file have them.
        manifest = {"shards": {str(layer): name for layer, name in names.items()}, "schema_version": SCHEMA_VERSION,
                    **summary}
        summary = {**summary, "seconds": round(run.total_seconds, 2), "device": device}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return summary
