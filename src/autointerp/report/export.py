"""Export: a run's explanations and every per-neuron score as one self-describing file set per neuron set.

``export/{set}.parquet`` (the column descriptions in each field's metadata and the run's description in the
file's), ``export/{set}.jsonl`` (the same rows, one JSON object each) and ``export/{set}.json`` (the description:
run, models, one entry per column with its meaning). One row per explanation: neuron × explainer × format ×
sample, and one per neuron and comparison method (N2G, TokenLookup) with the method's own scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.common.io import atomic_path
from autointerp.report.data import EXPLANATION, N2G_METRICS, RunData, score_label
from autointerp.report.settings import ReportSettings
from autointerp.tables.evaluations import EVALUATIONS

EXPORT_VERSION = "1"

COLUMNS = {
    "neuron_set": "the neuron set (config neuron_sets key)",
    "layer": "the neuron's layer",
    "neuron": "the neuron's index within the layer's hook",
    "kind": "`format` (an explanation from a prompt format, ranked by the tables) or `comparison` (a comparison "
            "method's row: N2G, TokenLookup)",
    "explainer": "the explainer role (config explainers key); null for a comparison method",
    "explainer_model": "the explainer role's model; null for a comparison method",
    "format": "the prompt format or variant (config prompt_formats key), or the comparison method's name",
    "sample": "which of the explainer's samples (0..samples-1); 0 for a comparison method",
    "explanation": "the explanation text (N2G: its graph's text rendering; TokenLookup: empty)",
    "prompt_tokens": "tokens of the explainer prompt in the explainer's encoding (tokens); null for a method",
    "completion_tokens": "tokens of the completion as the endpoint reported them (tokens); null for a method",
    "max_activation": "the neuron's maximum activation over the corpus (raw activation units)",
    "method_score": "comparison methods: Pearson correlation of the method's predictions and the true activations "
                    "on the same 10 held-out records as the simulator (-1..1); null for an explanation",
    "method_score_top": "the same over the 5 top records (-1..1)",
    "method_score_random": "the same over the 5 random records (-1..1)",
    "firing_precision": "N2G paper's metric: of the tokens predicted to fire (normalised activation >= 0.5), the "
                        "share that truly fire (0..1)",
    "firing_recall": "of the tokens that truly fire, the share predicted to (0..1)",
    "firing_f1": "harmonic mean of firing precision and recall (0..1)",
}


def score_columns(data: RunData) -> dict[str, str]:
    """``{column: meaning}`` of every per-neuron score in the run, from the evaluation registry's metrics."""
    meanings = {m: text for e in EVALUATIONS.values() if e.neuron_scores for m, text in e.neuron_scores.metrics.items()}
    pairs = data.scores.select("metric", "scorer").unique().sort("metric", "scorer").iter_rows()
    return {score_label(m, s): meanings.get(m, m) + (f"; scored by {s}" if s else "") for m, s in pairs}


def export_frame(data: RunData, settings: ReportSettings) -> pl.DataFrame:
    """The rows of every set: explanations with their scores wide, then the comparison methods' rows."""
    scores = data.scores.with_columns(
        pl.concat_str("metric", pl.when(pl.col("scorer") != "").then(pl.format("[{}]", "scorer")).otherwise(pl.lit("")))
        .alias("column"))
    wide = (scores.pivot(on="column", index=EXPLANATION, values="value", aggregate_function="first")
            if scores.height else pl.DataFrame(schema={k: data.explanations.schema[k] for k in EXPLANATION}))
    peak = data.stats.select("layer", "neuron", "max_activation")
    rows = (data.explanations
            .join(data.prompt_tokens, on=["neuron_set", "explainer", "format", "layer", "neuron"], how="left")
            .join(wide, on=EXPLANATION, how="left")
            .join(peak, on=["layer", "neuron"], how="left")
            .with_columns(pl.lit("format").alias("kind"), pl.col("model").alias("explainer_model")))
    methods = (data.methods.join(peak, on=["layer", "neuron"], how="left")
               .rename({"method": "format", "score": "method_score", "score_top": "method_score_top",
                        "score_random": "method_score_random"})
               .with_columns(pl.lit("comparison").alias("kind"), pl.lit(0, pl.Int32).alias("sample")))
    columns = [*[c for c in COLUMNS if c not in ("method_score", "method_score_top", "method_score_random",
                                                   *N2G_METRICS)],
               *score_columns(data), "method_score", "method_score_top", "method_score_random", *N2G_METRICS]
    both = pl.concat([rows, methods], how="diagonal_relaxed")
    both = both.with_columns(*(pl.lit(None).alias(c) for c in columns if c not in both.columns))
    order = data.neurons.select("neuron_set", "layer", "neuron", "order")
    return (both.join(order, on=["neuron_set", "layer", "neuron"], how="left")
            .sort("neuron_set", "order", pl.col("kind") == "comparison", "explainer", "format", "sample",
                  nulls_last=True)
            .select(columns))


def describe(data: RunData, settings: ReportSettings, neuron_set: str, frame: pl.DataFrame) -> dict:
    return {
        "kind": "autointerp.export", "export_version": EXPORT_VERSION, "neuron_set": neuron_set,
        "subject_model": settings.subject_model, "explainer_models": settings.explainer_models,
        "simulator_models": settings.simulator_models, "embedder_model": settings.embedder_model,
        "formats": settings.formats, "comparison_methods": settings.comparison_methods,
        "rows": frame.height, "neurons": frame.select("layer", "neuron").unique().height,
        "row_key": ["neuron_set", "layer", "neuron", "kind", "explainer", "format", "sample"],
        "columns": {**COLUMNS, **score_columns(data)},
    }


def write_export(data: RunData, settings: ReportSettings, outputs: dict[str, str]) -> dict[str, int]:
    """``outputs``: ``{set}.parquet`` paths; the JSONL and JSON descriptions are written beside each. Returns rows
    per set."""
    frame = export_frame(data, settings)
    written = {}
    for path in outputs.values():
        path = Path(path)
        neuron_set = path.stem
        part = frame.filter(pl.col("neuron_set") == neuron_set)
        description = describe(data, settings, neuron_set, part)
        table = part.to_arrow()
        meanings = description["columns"]
        table = table.cast(pa.schema(
            [f.with_metadata({"description": meanings[f.name]}) for f in table.schema],
            metadata={b"autointerp.export": json.dumps(description, sort_keys=True).encode()}))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path.with_suffix(".jsonl")) as tmp:
            part.write_ndjson(tmp)
        with atomic_path(path.with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps(description, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        with atomic_path(path) as tmp:  # last: the rule's declared output appears only once its companions exist
            pq.write_table(table, tmp, compression="zstd")
        written[neuron_set] = part.height
    return written

