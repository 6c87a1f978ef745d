"""The extract stage's settings and its rule jobs: prepare_model, build_corpus, extract_shard, merge_activations,
activations_manifest, neuron_set, records. Each rule receives only the parts of ``ExtractSettings`` it reads, so editing, say,
``records`` never reruns the extraction."""

from __future__ import annotations

from typing import Any, Literal

from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO


class SubjectPart(Settings):
    model: str
    hook: str
    layers: Literal["all"] | list[int]
    device: str
    dtype: Literal["float32", "float16", "bfloat16"]
    batch_size: int


class ActivationPart(Settings):
    top_k: int
    random_n: int
    quantiles: list[float]
    seed: int
    shards: int = 1
    layers_per_merge: int | None = None
    quantile_accuracy: float | None = None


class RecordPart(Settings):
    n_examples_per_split: int
    cutoff_quantile: float


class ExtractSettings(Settings):
    model: str | None = None  # what prepare_model prepares: the subject, or the embedded engine's model
    subject: SubjectPart | None = None
    corpus: dict[str, Any] | None = None  # the corpus section (its sources differ in shape; the schema checks it)
    extraction: ActivationPart | None = None
    records: RecordPart | None = None
    neuron_set: dict[str, Any] | None = None  # neuron_sets.<name>
    shape: dict[str, Any] | None = None  # n_layers, d_mlp (subject_models.model_shape) and the listed layers, or None
    chunk: dict[str, Any] | None = None  # records of one chunk (autointerp.extract.chunks.chunk_params)

    @classmethod
    def from_config(cls, config, wildcards) -> "ExtractSettings":
        from autointerp.extract.chunks import chunk_params
        from autointerp.extract.subject_models import EMBEDDED_SMOLLM2, model_shape

        subject = config["subject"]
        shape = model_shape(subject)
        model_id = wildcards.get("model_id", subject["id"])
        name = wildcards.get("neuron_set")
        return cls(model=subject["model"] if model_id == subject["id"] else EMBEDDED_SMOLLM2,
                   subject=subject_part(subject), corpus=config["corpus"],
                   extraction=config["extraction"], records=config["records"],
                   neuron_set=config["neuron_sets"][name] if name else None,
                   shape={"n_layers": shape[0], "d_mlp": shape[1],
                          "layers": subject["layers"] if isinstance(subject["layers"], list) else None}
                   if shape else None,
                   chunk=chunk_params(config, name, wildcards["chunk"]) if "chunk" in wildcards else None)


def subject_part(subject: dict) -> SubjectPart:
    # n_layers/d_mlp only plan (the job reads the shape off the model), so changing them reruns nothing.
    return SubjectPart.model_validate({k: v for k, v in subject.items() if k not in ("id", "n_layers", "d_mlp")})


def run_prepare_model(settings: ExtractSettings, io: RuleIO) -> dict:
    from autointerp.extract.subject_models import prepare_model

    return {"model": settings.model, **prepare_model(settings.model, io.outputs[0])}


def run_build_corpus(settings: ExtractSettings, io: RuleIO) -> dict:
    from autointerp.extract.corpus import write_corpus
    from autointerp.extract.subject_models import load_tokenizer

    table = write_corpus(dict(settings.corpus), load_tokenizer(io.input["model"]), io.outputs[0])
    return {"excerpts": table.num_rows,
            "windows_available": table.schema.metadata[b"autointerp.n_windows_available"].decode()}


def run_extract_shard(settings: ExtractSettings, io: RuleIO) -> dict:
    from autointerp.extract.activations import run_extract_shard as extract_shard

    s, e = settings.subject, settings.extraction
    return extract_shard(model_dir=io.input["model"], corpus_path=io.input["corpus"], out_dir=io.outputs[0],
                         shard=shard_index(io.wildcards["shard"]), shards=e.shards, layers=s.layers, hook=s.hook,
                         device=s.device, dtype=s.dtype, batch_size=s.batch_size, extraction=e.model_dump(),
                         threads=io.threads)


def run_merge_activations(settings: ExtractSettings, io: RuleIO) -> dict:
    from autointerp.extract.activations import run_merge_activations as merge

    return merge(shard_dirs=io.inputs, out_dir=io.outputs[0], group=io.wildcards["layer_group"],
                 layers_per_merge=settings.extraction.layers_per_merge, hook=settings.subject.hook,
                 extraction=settings.extraction.model_dump())


def run_activations_manifest(settings: ExtractSettings, io: RuleIO) -> dict:
    from autointerp.extract.activations import write_activations_manifest

    return write_activations_manifest(io.inputs, io.outputs[0])


def run_neuron_set(settings: ExtractSettings, io: RuleIO) -> dict:
    from autointerp.extract.activations import layer_shards
    from autointerp.extract.neuron_sets import read_csv_neurons, select_neurons, write_neuron_set

    spec = dict(settings.neuron_set)
    if "activations" in io.input:
        rows = select_neurons(spec, layer_shards(io.input["activations"]))
    else:  # a csv set of a model whose shape is known: checked without extracting anything
        shape = settings.shape
        rows = read_csv_neurons(spec["path"], shape["n_layers"], shape["d_mlp"], shape["layers"])
    write_neuron_set(rows, io.outputs[0])
    return {"neurons": len(rows)}


def run_records(settings: ExtractSettings, io: RuleIO) -> dict:
    from autointerp.common.io import atomic_write_parquet
    from autointerp.extract.activations import layer_shards
    from autointerp.extract.chunks import chunk_neurons, in_chunk
    from autointerp.extract.corpus import read_token_ids
    from autointerp.extract.neuron_sets import read_neuron_set
    from autointerp.extract.records import build_records
    from autointerp.extract.subject_models import load_decoder

    chunk = settings.chunk
    if chunk is not None and chunk["neurons"] is not None:  # a csv/all set's chunk: its neurons are its params
        neurons = chunk_neurons(chunk)
    else:
        neurons = read_neuron_set(io.input["neurons"])
        if chunk is not None:
            neurons = [n for n in neurons if in_chunk(chunk["id"], *n, chunk["by"])]
    table = build_records(neurons, layer_shards(io.input["activations"]),
                          read_token_ids(io.input["corpus"]), load_decoder(io.input["model"]),
                          n_per_split=settings.records.n_examples_per_split,
                          cutoff_quantile=settings.records.cutoff_quantile)
    atomic_write_parquet(table, io.outputs[0])
    return {"records": table.num_rows}


# Names in paths: shard "003of008" (0-based index 3 of 8), layer group "layers012-023" or "layers-all".
def shard_names(shards: int) -> list[str]:
    return [f"{i:03d}of{shards:03d}" for i in range(shards)]


def shard_index(name: str) -> int:
    return int(name.split("of")[0])


def layer_groups(subject: dict, layers_per_merge: int | None) -> list[str]:
    """The merge jobs' layer-group names for this config; a ConfigError when grouping needs a layer count that
    neither the config nor the shipped shapes know."""
    from autointerp.common.config import ConfigError
    from autointerp.extract.activations import layer_chunks
    from autointerp.extract.subject_models import model_shape

    layers = subject.get("layers", "all")
    if layers == "all" and layers_per_merge is not None:
        shape = model_shape(subject)
        if shape is None:
            raise ConfigError(f"extraction.layers_per_merge needs the layer count of {subject['model']!r}: set "
                              "subject.n_layers and subject.d_mlp, or list subject.layers")
        layers = list(range(shape[0]))
    return list(layer_chunks(layers, layers_per_merge))
