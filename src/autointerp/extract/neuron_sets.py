"""Neuron sets: which (layer, neuron) pairs a run explains.

Kinds (``neuron_sets.<name>.kind`` in config):
- ``random``: ``per_layer`` neurons from each configured layer, or ``total`` neurons spread over them, seeded;
- ``top``: the neurons with the highest maximum activation, ``per_layer`` or ``total`` (overall);
- ``all``: every neuron of every extracted layer (dead ones included);
- ``csv``: an explicit file with ``layer,neuron`` columns (extra columns such as ``score,explanation`` are
  kept, so the seed's ``test_neurons.csv`` / ``neurons_to_evaluate.csv`` work as they are).
Neurons whose maximum activation is not positive cannot be shown (the prompts normalise ``relu(x)/max``), so
``random`` skips them unless ``include_dead: true``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


class NeuronSetError(ValueError):
    pass


def read_csv_neurons(path, n_layers: int, d_mlp: int, layers: list[int] | None = None) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise NeuronSetError(f"neuron-set CSV {path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
        if "layer" not in fields or "neuron" not in fields:
            raise NeuronSetError(f"{path}: needs 'layer' and 'neuron' columns, found {reader.fieldnames}")
        rows, seen = [], set()
        for lineno, row in enumerate(reader, 2):
            try:
                layer, neuron = int(row[fields["layer"]]), int(row[fields["neuron"]])
            except (TypeError, ValueError):
                raise NeuronSetError(f"{path}:{lineno}: layer/neuron must be integers, got {row}") from None
            if not 0 <= layer < n_layers:
                raise NeuronSetError(f"{path}:{lineno}: layer {layer} out of range 0..{n_layers - 1}")
            if not 0 <= neuron < d_mlp:
                raise NeuronSetError(f"{path}:{lineno}: neuron {neuron} out of range 0..{d_mlp - 1}")
            if layers is not None and layer not in layers:
                raise NeuronSetError(
                    f"{path}:{lineno}: layer {layer} is not extracted (subject.layers = {layers}); add it")
            if (layer, neuron) in seen:
                continue
            seen.add((layer, neuron))
            extra = {k: v for k, v in row.items() if k not in (fields["layer"], fields["neuron"])}
            rows.append({"layer": layer, "neuron": neuron, **extra})
    if not rows:
        raise NeuronSetError(f"{path}: no neurons listed")
    return rows


def select_neurons(spec: dict, shard_paths: dict[int, str]) -> list[dict]:
    """Choose the neurons of one set from the per-layer activation shards."""
    kind = spec["kind"]
    layers = sorted(shard_paths)
    maxima = {
        layer: pq.read_table(path, columns=["max_activation"]).column(0).to_numpy()
        for layer, path in shard_paths.items()
    }
    d_mlp = len(next(iter(maxima.values())))
    if kind == "csv":
        meta = pq.read_schema(shard_paths[layers[0]]).metadata or {}
        n_layers = int(meta.get(b"autointerp.n_layers", max(layers) + 1))
        return read_csv_neurons(spec["path"], n_layers, d_mlp, layers)
    if kind == "all":
        return [{"layer": layer, "neuron": n} for layer in layers for n in range(d_mlp)]
    seed = int(spec.get("seed", 0))
    per_layer, total = spec.get("per_layer"), spec.get("total")
    if (per_layer is None) == (total is None):
        raise NeuronSetError(f"neuron set of kind {kind!r} needs exactly one of per_layer or total")
    candidates = []  # (layer, neuron, max)
    for layer in layers:
        m = maxima[layer]
        ok = np.ones_like(m, dtype=bool) if spec.get("include_dead") or kind == "top" else m > 0
        candidates.extend((layer, int(n), float(m[n])) for n in np.flatnonzero(ok))
    if kind == "top":
        def best(items, n):
            return sorted(items, key=lambda t: (-t[2], t[0], t[1]))[:n]
        if per_layer is not None:
            chosen = [c for layer in layers for c in best([c for c in candidates if c[0] == layer], per_layer)]
        else:
            chosen = best(candidates, total)
    elif kind == "random":
        rng = np.random.default_rng(seed)
        if per_layer is not None:
            chosen = []
            for layer in layers:
                pool = [c for c in candidates if c[0] == layer]
                if per_layer > len(pool):
                    raise NeuronSetError(f"layer {layer} has {len(pool)} live neurons, fewer than per_layer={per_layer}")
                chosen.extend(pool[i] for i in sorted(rng.choice(len(pool), per_layer, replace=False)))
        else:
            if total > len(candidates):
                raise NeuronSetError(f"{len(candidates)} live neurons, fewer than total={total}")
            chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), total, replace=False))]
    else:
        raise NeuronSetError(f"unknown neuron-set kind {kind!r} (known: random, top, csv, all)")
    return [{"layer": c[0], "neuron": c[1]} for c in sorted(chosen)]


def write_neuron_set(rows: list[dict], path) -> None:
    from autointerp.common.io import atomic_path

    keys = ["layer", "neuron"] + sorted({k for r in rows for k in r} - {"layer", "neuron"})
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_neuron_set(path) -> list[tuple[int, int]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [(int(r["layer"]), int(r["neuron"])) for r in csv.DictReader(fh)]
