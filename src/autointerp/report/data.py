"""A finished run's per-neuron data, read with polars: what the neuron pages, the plots and the export show.

Every reader takes the stage files the rule lists (never a glob of the results folder), so a report shows
exactly the run its config describes, and the names a path carries (set, explainer, simulator, format) come from
the path as the data contracts define it (docs/data_contracts.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import polars as pl
import pyarrow.parquet as pq

from autointerp.common.io import path_fields
from autointerp.common.snakemake_io import as_list
from autointerp.tables.evaluations import EVALUATIONS, read_neuron_scores

NEURON = ["neuron_set", "layer", "neuron"]
EXPLANATION = [*NEURON, "explainer", "format", "sample"]
STAT_COLUMNS = ["layer", "neuron", "max_activation", "quantiles", "mean", "variance"]
N2G_METRICS = ("firing_precision", "firing_recall", "firing_f1")


def _with_fields(df: pl.DataFrame, path, names: list[str]) -> pl.DataFrame:
    """``df`` with the names its path carries (``names`` = the folders above the file; the stem is the format)."""
    fields = path_fields([path], names)[0]
    return df.with_columns(*(pl.lit(fields[k]).alias(k) for k in [*names, "format"]))


def read_neuron_sets(paths) -> pl.DataFrame:
    """neuron_set, layer, neuron, order (the neuron's position in its set's CSV)."""
    frames = [pl.read_csv(p, columns=["layer", "neuron"], schema_overrides={"layer": pl.Int32, "neuron": pl.Int32})
              .with_row_index("order").with_columns(pl.lit(Path(p).stem).alias("neuron_set"))
              for p in as_list(paths)]
    return pl.concat(frames).select("neuron_set", "layer", "neuron", pl.col("order").cast(pl.Int32))


def _kept(frame: pl.LazyFrame, keep: pl.DataFrame | None, neuron_set: str) -> pl.LazyFrame:
    """Only the rows of ``keep``'s neurons of ``neuron_set`` (None: every row); read lazily, so the rest of a
    large file never sits in memory."""
    if keep is None:
        return frame
    wanted = keep.filter(pl.col("neuron_set") == neuron_set).select("layer", "neuron").lazy()
    return frame.join(wanted, on=["layer", "neuron"], how="semi")


def read_records(paths, keep: pl.DataFrame | None = None) -> pl.DataFrame:
    return pl.concat([_kept(pl.scan_parquet(p), keep, Path(p).stem)
                      .with_columns(pl.lit(Path(p).stem).alias("neuron_set")).collect() for p in as_list(paths)])


def read_activation_stats(manifest_path, neurons: pl.DataFrame) -> tuple[pl.DataFrame, list[float]]:
    """Each listed neuron's activation statistics (STAT_COLUMNS) from the activation files, and the quantile
    levels; only the layers that hold a listed neuron are read, and never their per-token columns."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    frames, levels = [], []
    for layer in sorted(set(neurons["layer"].to_list())):
        path = manifest_path.parent / manifest["shards"][str(layer)]
        levels = json.loads(pq.read_schema(path).metadata[b"autointerp.quantile_levels"])
        wanted = neurons.filter(pl.col("layer") == layer).select("layer", "neuron").unique()
        frames.append(pl.read_parquet(path, columns=STAT_COLUMNS).join(wanted, on=["layer", "neuron"]))
    stats = pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.Float64 for c in STAT_COLUMNS})
    return stats, levels


def _read_jsonl(path, columns: Sequence[str]) -> pl.DataFrame | None:
    """Selected keys of a JSONL file; None for an empty file (every call of a job may have failed)."""
    if Path(path).stat().st_size == 0:
        return None
    return pl.read_ndjson(path).select(columns)


def read_explanations(paths) -> pl.DataFrame:
    """EXPLANATION keys + explanation, model, completion_tokens, from explanations/{set}/{explainer}/{format}.jsonl."""
    frames = []
    for p in as_list(paths):
        df = _read_jsonl(p, ["layer", "neuron", "sample", "explanation", "model", "usage"])
        if df is None:
            continue
        df = df.with_columns(pl.col("usage").struct.field("completion_tokens").alias("completion_tokens")).drop("usage")
        frames.append(_with_fields(df, p, ["neuron_set", "explainer"]))
    if not frames:
        return pl.DataFrame(schema={**{k: pl.String for k in ("neuron_set", "explainer", "format", "explanation",
                                                               "model")},
                                    **{k: pl.Int32 for k in ("layer", "neuron", "sample", "completion_tokens")}})
    return pl.concat(frames, how="vertical_relaxed").with_columns(
        pl.col("layer", "neuron", "sample").cast(pl.Int32), pl.col("completion_tokens").cast(pl.Int64))


def read_prompt_tokens(paths) -> pl.DataFrame:
    """neuron_set, explainer, format, layer, neuron, prompt_tokens (the explainer prompt's size) from the prompt files."""
    frames = []
    for p in as_list(paths):
        df = _read_jsonl(p, ["layer", "neuron", "prompt_tokens"])
        if df is not None:
            frames.append(_with_fields(df, p, ["neuron_set", "explainer"]))
    if not frames:
        return pl.DataFrame(schema={"layer": pl.Int32, "neuron": pl.Int32, "prompt_tokens": pl.Int64,
                                    "neuron_set": pl.String, "explainer": pl.String, "format": pl.String})
    return pl.concat(frames, how="vertical_relaxed").with_columns(pl.col("layer", "neuron").cast(pl.Int32),
                                                                  pl.col("prompt_tokens").cast(pl.Int64))


def read_simulations(paths, keep: pl.DataFrame | None = None) -> pl.DataFrame:
    """The simulator's prediction per token of every valid record (simulations/{set}/{explainer}/{simulator}/{format})."""
    cols = ["layer", "neuron", "sample", "record", "position", "expected_value", "flag"]
    names = ["neuron_set", "explainer", "simulator"]
    frames = []
    for p in as_list(paths):
        neuron_set = path_fields([p], names)[0]["neuron_set"]
        frames.append(_with_fields(_kept(pl.scan_parquet(p).select(cols), keep, neuron_set).collect(), p, names))
    return pl.concat(frames) if frames else pl.DataFrame(
        schema={**{c: pl.Int32 for c in ("layer", "neuron", "sample", "record", "position")},
                "expected_value": pl.Float64, "flag": pl.String, "neuron_set": pl.String, "explainer": pl.String,
                "simulator": pl.String, "format": pl.String})


def read_methods(score_paths, metrics_paths) -> pl.DataFrame:
    """Comparison methods (N2G, TokenLookup), one row per (set, method, neuron): their text, scores and firing
    metrics (n2g/{set}/{method}.parquet and metrics.csv)."""
    frames = [pl.read_parquet(p, columns=["layer", "neuron", "explanation", "score", "score_top", "score_random"])
              .with_columns(pl.lit(Path(p).parent.name).alias("neuron_set"), pl.lit(Path(p).stem).alias("method"))
              for p in as_list(score_paths)]
    if not frames:
        return pl.DataFrame(schema={"neuron_set": pl.String, "method": pl.String, "layer": pl.Int32,
                                    "neuron": pl.Int32, "explanation": pl.String, "score": pl.Float64,
                                    "score_top": pl.Float64, "score_random": pl.Float64,
                                    **{m: pl.Float64 for m in N2G_METRICS}})
    metrics = pl.concat([pl.read_csv(p, schema_overrides={"layer": pl.Int32, "neuron": pl.Int32,
                                                           **{m: pl.Float64 for m in N2G_METRICS}})
                         .select("layer", "neuron", "method", *N2G_METRICS)
                         .with_columns(pl.lit(Path(p).parent.name).alias("neuron_set")) for p in as_list(metrics_paths)])
    return pl.concat(frames).join(metrics, on=["neuron_set", "method", "layer", "neuron"], how="left")


def score_label(metric: str, scorer: str) -> str:
    """A per-neuron score's column name: ``simulation[smollm2]``, or ``adacs`` for a metric with one scorer."""
    return f"{metric}[{scorer}]" if scorer else metric


@dataclass
class RunData:
    """Everything the pages and the export show, as polars frames."""

    neurons: pl.DataFrame  # neuron_set, layer, neuron, order (with a page limit: the neurons that get pages)
    records: pl.DataFrame
    stats: pl.DataFrame  # STAT_COLUMNS
    quantile_levels: list[float]
    explanations: pl.DataFrame
    scores: pl.DataFrame  # long: autointerp.tables.evaluations.NEURON_SCORE_COLUMNS
    simulations: pl.DataFrame
    methods: pl.DataFrame
    prompt_tokens: pl.DataFrame
    set_sizes: dict[str, int] = field(default_factory=dict)  # every set's neuron count (pages may cover fewer)

    @classmethod
    def read(cls, inputs: Mapping[str, object], *, with_simulations: bool = True,
             max_neurons_per_set: int | None = None) -> "RunData":
        """From a rule's named inputs: neuron_sets, records, activations (the manifest), explanations, prompts,
        simulations, methods, method_metrics, and one entry per evaluation with per-neuron files.
        ``max_neurons_per_set``: keep the first neurons of each set only (their records and simulations are the
        large parts); the scores, explanations and methods of every neuron are read either way."""
        everyone = read_neuron_sets(inputs["neuron_sets"])
        sizes = dict(everyone.group_by("neuron_set").len().iter_rows())
        neurons = everyone if max_neurons_per_set is None else everyone.filter(pl.col("order") < max_neurons_per_set)
        keep = None if max_neurons_per_set is None else neurons
        stats, levels = read_activation_stats(inputs["activations"], everyone)
        evaluation_files = {name: as_list(inputs[name]) for name in EVALUATIONS if name in inputs}
        return cls(
            neurons=neurons, records=read_records(inputs["records"], keep), stats=stats, quantile_levels=levels,
            explanations=read_explanations(inputs.get("explanations")),
            scores=read_neuron_scores(evaluation_files),
            simulations=read_simulations(inputs.get("simulations") if with_simulations else None, keep),
            methods=read_methods(inputs.get("methods"), inputs.get("method_metrics")),
            prompt_tokens=read_prompt_tokens(inputs.get("prompts")), set_sizes=sizes,
        )

    def neuron_values(self, metric: str) -> pl.DataFrame:
        """Per neuron, explainer, scorer and format: the mean over samples of ``metric``'s finite values (NaN when
        none is), as the tables take a neuron's value (autointerp.tables.pairing.unit_means)."""
        return (self.scores.filter(pl.col("metric") == metric)
                .group_by([*NEURON, "explainer", "scorer", "format"], maintain_order=True)
                .agg(pl.col("value").filter(pl.col("value").is_finite()).mean().fill_null(math.nan)))
