"""Explanation (train) and scoring (valid) records for a neuron set, split exactly as the reference does.

explainer_anchors §1.3 (``ActivationRecordSliceParams(n_examples_per_split=5)``):
- top records are interleaved with stride 4 over [train, calibration, valid, test]:
  train = top[0:4n:4], valid = top[2:4n:4];
- random records with stride 3 over [calibration, valid, test]: valid adds random[1:3n:3];
- valid = the top valid records followed by the random valid records.
Deviation (documented): the reference's random sample could contain one of the neuron's own top excerpts,
so train and valid could share text. Here the random list is first stripped of the neuron's top-k excerpts,
which makes train and valid disjoint by construction (and it is asserted).
The highlight cutoff of the new prompt formats is the neuron's quantile of per-excerpt maximum activation at
``cutoff_quantile`` (default 0.99, our reading of the reference's ``quantile_boundaries[2]``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from autointerp.common.io import read_parquet, read_parquet_schema, rerun_hint
from autointerp.common.records import ActivationRecord, NeuronId
from autointerp.extract.activations import ExtractionError, activations_fix


class RecordError(ValueError):
    pass


TOP_SPLITS = ("train", "calibration", "valid", "test")
RANDOM_SPLITS = ("calibration", "valid", "test")


def split_indices(n_top: int, n_random: int, n_per_split: int = 5) -> dict[str, list[tuple[str, int]]]:
    """Positions (source, index) of the train and valid records."""
    t, r = TOP_SPLITS.index, RANDOM_SPLITS.index
    plan = {
        "train": [("top", i) for i in range(t("train"), len(TOP_SPLITS) * n_per_split, len(TOP_SPLITS))],
        "valid": [("top", i) for i in range(t("valid"), len(TOP_SPLITS) * n_per_split, len(TOP_SPLITS))]
        + [("random", i) for i in range(r("valid"), len(RANDOM_SPLITS) * n_per_split, len(RANDOM_SPLITS))],
    }
    # Only the train and valid slices must exist (the reference's calibration/test slices are never used).
    need_top = 1 + max(i for split in plan.values() for src, i in split if src == "top")
    need_random = 1 + max(i for src, i in plan["valid"] if src == "random")
    if n_top < need_top:
        raise RecordError(f"{n_top} top records, need {need_top} for n_examples_per_split={n_per_split}: "
                          "raise extraction.top_k")
    if n_random < need_random:
        raise RecordError(f"{n_random} usable random records, need {need_random} for n_examples_per_split="
                          f"{n_per_split}: raise extraction.random_n")
    return plan


class TokenDecoder:
    """Token id -> token string as the reference shows it (leading spaces kept), memoised per id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, ids) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            s = self._cache.get(i)
            if s is None:
                s = self.tokenizer.decode([i], clean_up_tokenization_spaces=False)
                self._cache[i] = s
            out.append(s)
        return out


def _shard_fix(shard_path) -> str:
    return activations_fix(Path(shard_path).parent)


def quantile_index(shard_path, level: float) -> int:
    meta = read_parquet_schema(shard_path, fix=_shard_fix(shard_path), error=ExtractionError).metadata or {}
    try:
        levels = json.loads(meta[b"autointerp.quantile_levels"])
    except (KeyError, ValueError) as exc:
        raise ExtractionError(f"{shard_path}: no valid autointerp.quantile_levels metadata, not an activation shard "
                              f"of this version; {_shard_fix(shard_path)}") from exc
    for i, q in enumerate(levels):
        if abs(q - level) < 1e-12:
            return i
    raise RecordError(f"cutoff quantile {level} was not extracted (extraction.quantiles = {levels}); add it")


def build_records(neurons: list[tuple[int, int]], shard_paths: dict[int, str], token_ids: np.ndarray,
                  tokenizer, *, n_per_split: int = 5, cutoff_quantile: float = 0.99) -> pa.Table:
    decode = TokenDecoder(tokenizer)
    rows: dict[str, list] = {k: [] for k in (
        "layer", "neuron", "split", "position", "source", "source_rank", "excerpt_id", "tokens", "token_ids",
        "activations", "max_activation", "cutoff", "cutoff_quantile")}
    by_layer: dict[int, list[int]] = {}
    for layer, neuron in neurons:
        by_layer.setdefault(layer, []).append(neuron)
    for layer in sorted(by_layer):
        if layer not in shard_paths:
            raise RecordError(f"layer {layer} was not extracted")
        qi = quantile_index(shard_paths[layer], cutoff_quantile)
        table = read_parquet(shard_paths[layer], fix=_shard_fix(shard_paths[layer]), error=ExtractionError)
        wanted = sorted(set(by_layer[layer]))
        if wanted[-1] >= table.num_rows:
            raise RecordError(f"neuron {wanted[-1]} out of range for layer {layer} ({table.num_rows} neurons)")
        sub = table.take(pa.array(wanted))
        for row in sub.to_pylist():
            top_ids, rand_ids = row["top_excerpt_ids"], row["random_excerpt_ids"]
            top_set = set(top_ids)
            usable_random = [(i, e) for i, e in enumerate(rand_ids) if e not in top_set]
            plan = split_indices(len(top_ids), len(usable_random), n_per_split)
            seen: dict[str, set] = {}
            for split, positions in plan.items():
                for pos, (source, idx) in enumerate(positions):
                    if source == "top":
                        eid, acts, rank = top_ids[idx], row["top_activations"][idx], idx
                    else:
                        rank, eid = usable_random[idx]
                        acts = row["random_activations"][rank]
                    seen.setdefault(split, set()).add(eid)
                    toks = token_ids[eid]
                    rows["layer"].append(layer)
                    rows["neuron"].append(row["neuron"])
                    rows["split"].append(split)
                    rows["position"].append(pos)
                    rows["source"].append(source)
                    rows["source_rank"].append(rank)
                    rows["excerpt_id"].append(eid)
                    rows["tokens"].append(decode(toks))
                    rows["token_ids"].append([int(t) for t in toks])
                    rows["activations"].append(acts)
                    rows["max_activation"].append(row["max_activation"])
                    rows["cutoff"].append(row["quantiles"][qi])
                    rows["cutoff_quantile"].append(cutoff_quantile)
            shared = seen.get("train", set()) & seen.get("valid", set())
            assert not shared, f"neuron {layer}:{row['neuron']}: train and valid share excerpts {sorted(shared)}"
    schema = pa.schema([
        ("layer", pa.int32()), ("neuron", pa.int32()), ("split", pa.string()), ("position", pa.int32()),
        ("source", pa.string()), ("source_rank", pa.int32()), ("excerpt_id", pa.int64()),
        ("tokens", pa.list_(pa.string())), ("token_ids", pa.list_(pa.int32())),
        ("activations", pa.list_(pa.float32())), ("max_activation", pa.float32()), ("cutoff", pa.float32()),
        ("cutoff_quantile", pa.float64()),
    ])
    return pa.table(rows, schema=schema).replace_schema_metadata({
        "autointerp.kind": "records", "autointerp.n_examples_per_split": str(n_per_split)})


def load_records(path) -> dict[NeuronId, dict]:
    """Read a records file back as {NeuronId: {"train": [...], "valid": [...], "cutoff": float}}."""
    out: dict[NeuronId, dict] = {}
    table = read_parquet(path)
    missing = {"layer", "neuron", "split", "tokens", "activations", "excerpt_id", "cutoff", "max_activation",
               "source"} - set(table.column_names)
    if missing:
        raise RecordError(f"{path}: not a records file (no columns {sorted(missing)}); {rerun_hint(path)}")
    for r in table.to_pylist():
        nid = NeuronId(r["layer"], r["neuron"])
        entry = out.setdefault(nid, {"train": [], "valid": [], "cutoff": r["cutoff"],
                                     "max_activation": r["max_activation"], "valid_sources": []})
        entry[r["split"]].append(ActivationRecord(r["tokens"], r["activations"], excerpt_id=r["excerpt_id"]))
        if r["split"] == "valid":
            entry["valid_sources"].append(r["source"])
    return out
