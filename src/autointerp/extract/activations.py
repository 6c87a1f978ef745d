"""One streaming pass over the corpus that summarises every neuron of every configured layer.

For each neuron it keeps, with memory bounded by the number of neurons (never all token activations):
- the top-k excerpts by the excerpt's maximum activation, with their per-token activation vectors;
- the activation vectors on a seeded random sample of excerpts chosen independently of activation;
- count, sum and sum of squares of token activations (float64, summed along a fixed tree of batches);
- the quantiles of its per-excerpt maxima (the reference's quantile boundaries; explainer_anchors §1.2): exact
  from every maximum (N x d per layer, in a memmap), or from a DDSketch of bounded size
  (``extraction.quantile_accuracy``; autointerp.extract.summaries).

Ordering is total and deterministic: higher maximum first, ties broken by the smaller excerpt id. Every piece of
the state merges exactly across corpus shards (``merge``): the corpus is split at batch boundaries into shard jobs
(``extract_shard``) whose saved states a merge job per layer group combines to the bytes of a single pass.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from autointerp.common.io import atomic_dir, atomic_write_parquet
from autointerp.extract.summaries import ExactMaxima, MaximaSketch, PairwiseSums

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
    quantile_accuracy: float | None = None  # None: exact quantiles; else the DDSketch relative accuracy


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
    """Streaming summary of one layer's neurons over the excerpts [lo, hi) of a corpus of ``n_excerpts``
    (torch tensors on the model's device; sums and exact maxima on the host)."""

    def __init__(self, d: int, k: int, length: int, random_ids: np.ndarray, n_excerpts: int,
                 device="cpu", maxima_dir: str | None = None, *, lo: int = 0, hi: int | None = None,
                 quantile_accuracy: float | None = None):
        import torch

        self.d, self.k, self.length, self.device = d, k, length, device
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
        self.sums = PairwiseSums()  # per batch: (2, d) float64 sum and sum of squares of token activations
        hi = n_excerpts if hi is None else hi
        self.maxima: ExactMaxima | MaximaSketch = (
            ExactMaxima(lo, hi, d, maxima_dir) if quantile_accuracy is None
            else MaximaSketch(quantile_accuracy, d, device))
        self.seen = np.zeros(n_excerpts, dtype=bool)

    # -- streaming ---------------------------------------------------------------------------------
    def update(self, acts, excerpt_ids, block: int) -> None:
        """Fold in batch number ``block`` (global): ``acts`` (B, T, d) float32, ``excerpt_ids`` (B,) int64."""
        import torch

        acts = acts.float()
        batch_max = acts.amax(dim=1)  # (B, d)
        ids_np = excerpt_ids.cpu().numpy()
        if isinstance(self.maxima, ExactMaxima):
            self.maxima.update(ids_np, batch_max.cpu().numpy())
        else:
            self.maxima.update(batch_max)
        self.seen[ids_np] = True
        self.count += acts.shape[0] * acts.shape[1]
        # Per-excerpt partial sums in float32 (T values), summed over the batch in float64.
        sums = torch.stack([acts.sum(dim=1).sum(dim=0, dtype=torch.float64),
                            (acts * acts).sum(dim=1).sum(dim=0, dtype=torch.float64)])
        self.sums.add(block, sums.cpu().numpy())
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
        """Fold another shard's state into this one (disjoint excerpt ids, same random sample). The result has
        the same bits as one pass over both shards' excerpts (same device and batch size)."""
        if not np.array_equal(self.random_ids, other.random_ids):
            raise ExtractionError("cannot merge shards drawn with different random samples")
        if np.any(self.seen & other.seen):
            raise ExtractionError("cannot merge shards that share excerpts")
        if type(self.maxima) is not type(other.maxima):
            raise ExtractionError("cannot merge shards extracted with different extraction.quantile_accuracy")
        self._merge_top(other.top_vals, other.top_ids, lambda slots, neurons: other.top_acts[neurons, slots])
        fill = other.rand_filled & ~self.rand_filled
        self.rand_acts[:, fill, :] = other.rand_acts[:, fill, :].to(self.rand_acts.device)
        self.rand_filled |= other.rand_filled
        self.count += other.count
        self.sums.merge(other.sums)
        self.maxima.merge(other.maxima)
        self.seen |= other.seen

    # -- shard files -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """The state as one uncompressed .npz (random-sample rows only for the slots this shard filled)."""
        filled = np.flatnonzero(self.rand_filled)
        arrays = {
            "shape": np.array([self.d, self.k, self.length, len(self.seen)], dtype=np.int64),
            "top_vals": self.top_vals.cpu().numpy(), "top_ids": self.top_ids.cpu().numpy(),
            "top_acts": self.top_acts.cpu().numpy(), "random_ids": self.random_ids,
            "rand_slots": filled, "rand_acts": self.rand_acts[:, filled, :].cpu().numpy(),
            "count": np.int64(self.count), "seen": self.seen,
            **self.sums.to_arrays("sums"), **self.maxima.to_arrays(),
        }
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path, device="cpu") -> "LayerState":
        import torch

        with np.load(path) as z:
            d, k, length, n = (int(x) for x in z["shape"])
            out = cls.__new__(cls)
            out.d, out.k, out.length, out.device = d, k, length, device
            out.top_vals = torch.as_tensor(z["top_vals"], device=device)
            out.top_ids = torch.as_tensor(z["top_ids"], device=device)
            out.top_key = order_keys(out.top_vals, out.top_ids)
            out.top_acts = torch.as_tensor(z["top_acts"], device=device)
            out.random_ids = z["random_ids"]
            out._slot = {int(e): i for i, e in enumerate(out.random_ids)}
            out.rand_acts = torch.zeros((d, len(out.random_ids), length), device=device)
            out.rand_filled = np.zeros(len(out.random_ids), dtype=bool)
            slots = z["rand_slots"]
            out.rand_acts[:, torch.as_tensor(slots, dtype=torch.int64), :] = torch.as_tensor(z["rand_acts"],
                                                                                           device=device)
            out.rand_filled[slots] = True
            out.count = int(z["count"])
            out.seen = z["seen"]
            out.sums = PairwiseSums.from_arrays(z, "sums")
            out.maxima = (MaximaSketch.from_arrays(z, device) if "sketch_alpha" in z.files
                          else ExactMaxima.from_arrays(z))
        return out

    # -- output ------------------------------------------------------------------------------------
    def to_table(self, layer: int, quantile_levels, metadata: dict) -> pa.Table:
        if not self.seen.all():
            raise ExtractionError(f"layer {layer}: {int((~self.seen).sum())} excerpts were never seen")
        if not self.rand_filled.all():
            raise ExtractionError(f"layer {layer}: random-sample excerpts missing from every shard")
        n = len(self.seen)
        if n < self.k:
            raise ExtractionError(f"corpus has {n} excerpts, fewer than top_k={self.k}")
        quantiles = self.maxima.quantiles(quantile_levels)  # (d, q)
        total, total_sq = self.sums.total()
        mean = total / self.count
        var = np.maximum(total_sq / self.count - mean * mean, 0.0)
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
            "autointerp.quantile_method": self.maxima.method,
        })
        return pa.table(columns).replace_schema_metadata(meta)


@dataclass
class ExtractionRun:
    states: dict[int, LayerState]
    total_seconds: float = 0.0
    n_batches: int = 0


def extract(model, token_ids: np.ndarray, settings: ExtractionSettings, *, excerpt_offset: int = 0,
            n_total: int | None = None, device: str = "cpu", maxima_dir: str | None = None,
            label: str = "extract", progress_interval_s: float = 10.0) -> ExtractionRun:
    """Run the model over ``token_ids`` (N, T) once, feeding every configured layer's hook to its state.

    ``excerpt_offset``/``n_total`` let a corpus shard use global excerpt ids; a shard starts at a batch boundary,
    so that its batches are the single pass's batches (the same sums, bit for bit). Progress (``label: b/B
    batches, r tokens/s, ETA t``) goes to the logger ``autointerp.extract.progress`` every ``progress_interval_s``.
    """
    import torch

    from autointerp.common.progress import Progress

    n, length = token_ids.shape
    n_total = n_total if n_total is not None else n
    if excerpt_offset % settings.batch_size:
        raise ExtractionError(f"a corpus shard must start at a batch boundary: excerpt {excerpt_offset} is not a "
                              f"multiple of the batch size {settings.batch_size}")
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
        layer: LayerState(model.d_mlp, settings.top_k, length, rand, n_total, device=device, maxima_dir=maxima_dir,
                          lo=excerpt_offset, hi=excerpt_offset + n, quantile_accuracy=settings.quantile_accuracy)
        for layer in settings.layers
    }
    current = {"ids": None, "block": 0, "pending": set()}

    def make_hook(layer):
        def hook(tensor, hook=None):
            states[layer].update(tensor.detach(), current["ids"], current["block"])
            current["pending"].discard(layer)
            if not current["pending"]:
                # Every configured hook has fired: the rest of the forward (later blocks, final norm and the
                # unembedding, 49,152 logits per token) would be thrown away. Measured on SmolLM2-135M (all
                # 30 layers, 2 threads): 22.6 s -> 16.0 s for 128 excerpts.
                raise _HooksDone
        return hook

    hooks = [(model.hook_name(settings.hook, layer), make_hook(layer)) for layer in settings.layers]
    run = ExtractionRun(states)
    progress = Progress(-(-n // settings.batch_size), label, progress_interval_s, unit="batches",
                        rate_per_item=("tokens", settings.batch_size * length), heartbeat=True,
                        logger=logging.getLogger("autointerp.extract.progress"))
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            for start in range(0, n, settings.batch_size):
                batch = torch.as_tensor(token_ids[start:start + settings.batch_size], device=device)
                current["ids"] = torch.arange(start, start + len(batch), dtype=torch.int64) + excerpt_offset
                current["block"] = (excerpt_offset + start) // settings.batch_size
                current["pending"] = set(settings.layers)
                try:
                    model.bridge.run_with_hooks(batch, fwd_hooks=hooks, return_type=None)
                except _HooksDone:
                    pass
                if current["pending"]:
                    raise ExtractionError(f"hooks of layers {sorted(current['pending'])} did not fire "
                                          f"(subject.hook {settings.hook!r})")
                run.n_batches += 1
                progress.tick()
    finally:
        progress.finish()  # the last line, also when a batch fails (how far it got)
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
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()  # kernels run asynchronously: the time is the GPU's, not the launches'
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
    return f"delete the folder {activations_dir} and rerun extraction (rules extract_shard, merge_activations)"


def layer_shards(activations_dir) -> dict[int, str]:
    """{layer: shard path} from an activations folder's manifest (the folder, or its manifest.json).

    The manifest is read strictly and every shard's Parquet footer is checked (cheap: a few KB each), so a
    truncated, garbage or missing shard is refused here, in one line, before any job reads it.
    """
    from autointerp.common.io import read_json, read_parquet_schema

    folder = Path(activations_dir)
    if folder.name == "manifest.json":
        folder = folder.parent
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


def shard_bounds(n_excerpts: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Excerpt ranges [lo, hi) of ``shards`` corpus shards, split at batch boundaries as evenly as batches allow."""
    n_batches = -(-n_excerpts // batch_size)
    if not 1 <= shards <= n_batches:
        raise ExtractionError(f"extraction.shards={shards}, but the corpus has {n_batches} batches of "
                              f"subject.batch_size={batch_size} ({n_excerpts} excerpts): use 1..{n_batches} shards")
    cuts = [i * n_batches // shards * batch_size for i in range(shards)] + [n_excerpts]
    return [(lo, min(hi, n_excerpts)) for lo, hi in zip(cuts, cuts[1:])]


def _extraction_settings(layers: list[int], hook: str, batch_size: int, extraction: dict) -> ExtractionSettings:
    accuracy = extraction.get("quantile_accuracy")
    return ExtractionSettings(layers=layers, hook=hook, top_k=int(extraction["top_k"]),
                              random_n=int(extraction["random_n"]),
                              quantiles=tuple(float(q) for q in extraction["quantiles"]),
                              seed=int(extraction["seed"]), batch_size=int(batch_size),
                              quantile_accuracy=None if accuracy is None else float(accuracy))


def run_extract_shard(*, model_dir, corpus_path, out_dir, shard: int, shards: int, layers, hook, device="auto",
                      dtype="float32", batch_size=32, extraction: dict, threads: int | None = None) -> dict:
    """The extract_shard rule: one pass over corpus shard ``shard`` of ``shards``; every layer's state saved as
    ``layerLLL.npz`` (with ``shard.json``) into ``out_dir``, atomically."""
    import torch

    from autointerp.common.snakemake_io import usable_threads
    from autointerp.extract.corpus import read_token_ids
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
    n_total = int(token_ids.shape[0])
    settings = _extraction_settings(layer_list, hook, batch_size, extraction)
    lo, hi = shard_bounds(n_total, settings.batch_size, shards)[shard]
    model = load_prepared_model(model_dir, device=device, dtype=dtype)
    with atomic_dir(out_dir) as tmp:
        scratch = tmp / ".maxima"
        scratch.mkdir()
        run = extract(model, token_ids[lo:hi], settings, excerpt_offset=lo, n_total=n_total, device=device,
                      maxima_dir=str(scratch), label=f"extract_shard {shard + 1}/{shards} ({hi - lo} excerpts)")
        for layer, state in run.states.items():
            state.save(tmp / f"layer{layer:03d}.npz")
            del state.maxima  # closes the memmap before its file goes
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()
        meta = {"model": info["model"], "n_layers": info["n_layers"], "d_mlp": info["d_mlp"],
                "corpus": Path(corpus_path).name, "excerpt_tokens": int(token_ids.shape[1]), "n_excerpts": n_total,
                "dtype": dtype, "layers": layer_list, "shard": shard, "shards": shards, "lo": lo, "hi": hi}
        (tmp / "shard.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return {"shard": f"{shard + 1} of {shards}", "excerpts": hi - lo, "layers": len(layer_list),
            "seconds": round(run.total_seconds, 2), "device": device}


def layer_chunks(layers, per_merge: int | None) -> dict[str, list[int] | str]:
    """Merge groups {name: layers}: consecutive runs of ``per_merge`` sorted layers, named by their first and last
    layer ("layers012-023"); one group "layers-all" when ``per_merge`` is None (or ``layers`` is "all")."""
    if per_merge is None or layers == "all":
        return {"layers-all": "all" if layers == "all" else sorted(layers)}
    layers = sorted(int(x) for x in layers)
    chunks = [layers[i:i + per_merge] for i in range(0, len(layers), per_merge)]
    return {f"layers{c[0]:03d}-{c[-1]:03d}": c for c in chunks}


def run_merge_activations(*, shard_dirs: list, out_dir, group: str, layers_per_merge: int | None, hook,
                          extraction: dict) -> dict:
    """The merge_activations rule: every shard's state of each layer of ``group`` (see layer_chunks, over the
    layers the shards hold) folded in excerpt order, written as ``layerLLL.parquet`` into ``out_dir`` atomically."""
    from autointerp.common.io import read_json

    shards = sorted(((read_json(Path(d) / "shard.json", error=ExtractionError), Path(d)) for d in shard_dirs),
                    key=lambda md: md[0]["lo"])
    metas = [m for m, _ in shards]
    first = metas[0]
    if [m["lo"] for m in metas] != [0] + [m["hi"] for m in metas[:-1]] or metas[-1]["hi"] != first["n_excerpts"]:
        raise ExtractionError(f"the shards {sorted(map(str, shard_dirs))} do not cover the corpus exactly once; "
                              f"{activations_fix(out_dir)}")
    groups = layer_chunks(first["layers"], layers_per_merge)
    if group not in groups:
        raise ExtractionError(f"layer group {group} is not one of {sorted(groups)} (the layers the shards hold); "
                              f"{activations_fix(out_dir)}")
    layer_list = first["layers"] if groups[group] == "all" else groups[group]
    settings = _extraction_settings(layer_list, hook, 1, extraction)
    meta = {k: first[k] for k in ("model", "n_layers", "d_mlp", "corpus", "excerpt_tokens", "n_excerpts", "dtype")}
    with atomic_dir(out_dir) as tmp:
        for layer in layer_list:
            state = LayerState.load(shards[0][1] / f"layer{layer:03d}.npz")
            for _, folder in shards[1:]:
                state.merge(LayerState.load(folder / f"layer{layer:03d}.npz"))
            write_layer_shards(ExtractionRun({layer: state}), settings, {layer: tmp / f"layer{layer:03d}.parquet"},
                               meta)
    return {"layers": len(layer_list), "shards": len(metas), "excerpts": first["n_excerpts"]}


def write_activations_manifest(group_dirs: list, manifest_path) -> dict:
    """The activations_manifest rule: one manifest over the merged layer groups (paths relative to it)."""
    import pyarrow.parquet as pq

    from autointerp.common.io import atomic_write_text

    root = Path(manifest_path).parent
    shards: dict[str, str] = {}
    for group in sorted(map(Path, group_dirs)):
        for f in sorted(group.glob("layer*.parquet")):
            shards[str(int(f.stem.removeprefix("layer")))] = str(f.relative_to(root))
    if not shards:
        raise ExtractionError(f"no merged layers in {sorted(map(str, group_dirs))}; rerun extraction")
    meta = pq.read_schema(root / next(iter(shards.values()))).metadata
    n_excerpts = int(meta[b"autointerp.n_excerpts"])
    d_mlp, length = int(meta[b"autointerp.d_mlp"]), int(meta[b"autointerp.excerpt_tokens"])
    summary = {"layers": len(shards), "neurons_per_layer": d_mlp, "excerpts": n_excerpts,
               "tokens": n_excerpts * length}
    manifest = {"shards": dict(sorted(shards.items(), key=lambda kv: int(kv[0]))), "schema_version": SCHEMA_VERSION,
                **summary}
    # No timings (same config, same bytes); the jobs' logs and benchmark files have them.
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return summary
