"""Chunks of a neuron set: the unit of the per-neuron jobs (records, prompts, explain, simulate) when the config
sets ``chunks``; tables read the chunks gathered per set.

A chunk is a layer (``chunks: layer``, id ``L005``) or a block of ``chunks: N`` consecutive neuron indices of a layer
(id ``L005-0003`` = neurons 3N..4N-1 of layer 5). A neuron's chunk depends only on the neuron, so adding neurons to a
set touches only their chunks. Sets whose neurons the config itself names (``csv``, ``all``) are chunked when the
workflow is parsed, only non-empty chunks get jobs, and each chunk's neuron list is its jobs' parameter: editing the
CSV reruns only the chunks whose neurons changed. ``random``/``top`` sets depend on the activations: every chunk of
the extracted layers gets jobs (some may be empty), and each reads the set's CSV.
"""

from __future__ import annotations

from pathlib import Path

import functools
import json
from typing import Any

CHUNK_PATTERN = r"L\d{3}(-\d{4})?"


class ChunkError(ValueError):
    pass


def chunk_of(layer: int, neuron: int, chunks: str | int) -> str:
    return f"L{layer:03d}" if chunks == "layer" else f"L{layer:03d}-{neuron // int(chunks):04d}"


def in_chunk(chunk: str, layer: int, neuron: int, chunks: str | int) -> bool:
    return chunk_of(layer, neuron, chunks) == chunk


def static_neurons(spec: dict, subject: dict) -> list[tuple[int, int]] | None:
    """The set's neurons when the config alone names them (kinds csv and all), else None."""
    from autointerp.extract.neuron_sets import read_csv_neurons
    from autointerp.extract.subject_models import model_shape

    shape = model_shape(subject)
    layers = subject.get("layers", "all")
    if spec["kind"] == "csv":
        if spec.get("released") and not Path(spec["path"]).exists():
            return None  # a released file not fetched yet (rule released_file): its jobs read the set's CSV
        n_layers, d_mlp = shape or (10**6, 10**9)  # unknown shape: the neuron_set job checks the ranges
        rows = read_csv_neurons(spec["path"], n_layers, d_mlp, None if layers == "all" else list(layers))
        return sorted((r["layer"], r["neuron"]) for r in rows)
    if spec["kind"] == "all":
        if shape is None:
            raise ChunkError(f"neuron set kind 'all' needs the shape of {subject['model']!r}: set subject.n_layers "
                             "and subject.d_mlp")
        return [(layer, n) for layer in (range(shape[0]) if layers == "all" else sorted(layers))
                for n in range(shape[1])]
    return None


def set_chunks(spec: dict, subject: dict, chunks: str | int) -> dict[str, list[tuple[int, int]] | None]:
    """{chunk id: its neurons (static sets) or None (the job filters the set's CSV)}, in neuron order."""
    from autointerp.extract.subject_models import model_shape

    neurons = static_neurons(spec, subject)
    if neurons is not None:
        out: dict[str, list[tuple[int, int]]] = {}
        for layer, n in neurons:
            out.setdefault(chunk_of(layer, n, chunks), []).append((layer, n))
        return dict(sorted(out.items()))
    shape = model_shape(subject)
    layers = subject.get("layers", "all")
    if shape is None and (layers == "all" or chunks != "layer"):
        raise ChunkError(f"chunks: {chunks} on a {spec['kind']} set needs the shape of {subject['model']!r}: set "
                         "subject.n_layers and subject.d_mlp (or list subject.layers and use chunks: layer)")
    layer_list = range(shape[0]) if layers == "all" else sorted(layers)
    if chunks == "layer":
        return {chunk_of(layer, 0, chunks): None for layer in layer_list}
    size = int(chunks)
    return {chunk_of(layer, b * size, chunks): None for layer in layer_list for b in range(-(-shape[1] // size))}


@functools.lru_cache(maxsize=64)
def _cached_set_chunks(spec_json: str, subject_json: str, chunks: str | int):
    return set_chunks(json.loads(spec_json), json.loads(subject_json), chunks)


def config_set_chunks(config: dict, neuron_set: str) -> dict[str, list[tuple[int, int]] | None]:
    """set_chunks for a set of the validated config, computed once per process (a CSV set is read once, not once
    per job while Snakemake builds the DAG)."""
    return _cached_set_chunks(json.dumps(config["neuron_sets"][neuron_set], sort_keys=True),
                              json.dumps(config["subject"], sort_keys=True), config["chunks"])


def chunk_params(config: dict, neuron_set: str, chunk: str) -> dict[str, Any]:
    """What a chunk's jobs need: its id, the chunking, and for static sets its neurons as index ranges of its one
    layer ("0-999" or "3,7,100-120": a short string, so thousands of jobs' params stay cheap to build and compare)."""
    neurons = config_set_chunks(config, neuron_set).get(chunk)
    return {"id": chunk, "by": config["chunks"],
            "neurons": None if neurons is None else encode_ranges([n for _, n in neurons])}


def chunk_neurons(params: dict[str, Any]) -> list[tuple[int, int]] | None:
    """The (layer, neuron) pairs of a static chunk's params, or None (the job filters the set's CSV)."""
    if params["neurons"] is None:
        return None
    layer = int(params["id"][1:4])
    return [(layer, n) for n in decode_ranges(params["neurons"])]


def encode_ranges(values: list[int]) -> str:
    parts: list[str] = []
    for v in sorted(values):
        if parts and "-" in parts[-1] and int(parts[-1].split("-")[1]) == v - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        elif parts and "-" not in parts[-1] and int(parts[-1]) == v - 1:
            parts[-1] = f"{parts[-1]}-{v}"
        else:
            parts.append(str(v))
    return ",".join(parts)


def decode_ranges(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out
