"""Explanation similarity (AdaCS, Lee et al. 2023 Tables 3 and 4): cosine of sentence embeddings between each
explanation and a reference explanation (a baseline explainer / published explanation, or a puzzle's ground truth).

Embeddings go through the LLM layer (role ``embedder``), so they are cached like every other call. Strings are
embedded as they are (the reference keeps leading spaces and trailing periods).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, Literal

import pyarrow as pa

from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO, console, job_label
from autointerp.llm.settings import EmbedderRole
from autointerp.similarity.embeddings import BATCH_SIZE, similarity_to_reference
from autointerp.common.io import atomic_write_parquet, atomic_write_text, read_jsonl

log = logging.getLogger("autointerp.similarity")

SIM_SCHEMA = pa.schema([("layer", pa.int32()), ("neuron", pa.int32()), ("format", pa.string()),
                        ("sample", pa.int32()), ("puzzle", pa.string()), ("explanation", pa.string()),
                        ("reference", pa.string()), ("similarity", pa.float64()),
                        ("reference_share", pa.float64()), ("reference_degenerate", pa.bool_())])


# A reference set in which one text stands for more than this share of the neurons is flagged as degenerate.
DEGENERATE_SHARE = 0.5


class ReferenceSpec(Settings):
    """adacs.references.<neuron set>: where the reference explanations come from."""

    kind: Literal["top_tokens", "explainer", "csv", "neuronviewer"]
    explainer: str | None = None
    format: str
    sample: int
    path: str | None = None
    released: str | None = None  # the released file that path holds (rules/common.smk resolves it)
    column: str = "explanation"  # csv: the column with the reference explanations
    cache_dir: str | None = None
    n_tokens: int


class SimilaritySettings(Settings):
    """Embedding similarity (AdaCS, puzzles) and puzzle sets."""

    embedder: str | None = None
    role: EmbedderRole | None = None
    reference: ReferenceSpec | None = None  # AdaCS; None for puzzles (each line carries its ground truth)
    normalise: Literal["strip"] | None = None
    cache_dir: str
    puzzle_set: dict[str, Any] | None = None  # puzzles.sets.<name> (rule puzzle_set)

    @classmethod
    def from_config(cls, config, wildcards) -> "SimilaritySettings":
        adacs, puzzles = config.get("adacs") or {}, config.get("puzzles") or {}
        if "puzzle_set" in wildcards:
            section, reference, normalise = puzzles, None, None
            puzzle_set = puzzles["sets"][wildcards["puzzle_set"]]
        else:
            section, puzzle_set, normalise = adacs, None, adacs.get("normalise")
            reference = adacs["references"][wildcards["neuron_set"]] if "neuron_set" in wildcards else None
        name = section.get("embedder")
        role = EmbedderRole.model_validate(config["embedders"][name]) if name else None
        return cls(embedder=name, role=role, reference=reference, normalise=normalise,
                   cache_dir=config["llm"]["cache_dir"], puzzle_set=puzzle_set)


def load_references(spec: ReferenceSpec, *, neurons: list[tuple[int, int]], reference_files: list[str]) -> dict:
    """{(layer, neuron): reference explanation} for one neuron set."""
    from autointerp.extract.records import load_records
    from autointerp.similarity.references import (as_texts, fetch_neuronviewer_many, load_csv_baselines,
                                                  load_reference_explainer, top_token_references)

    if spec.kind == "top_tokens":
        return top_token_references(load_records(reference_files[0]), spec.n_tokens)
    if spec.kind == "explainer":
        return load_reference_explainer(reference_files, format=spec.format, sample=spec.sample)
    if spec.kind == "csv":
        return as_texts(load_csv_baselines(spec.path, column=spec.column))
    return as_texts(fetch_neuronviewer_many(neurons, spec.cache_dir or ".cache/neuronviewer"))


def run_adacs_job(settings: SimilaritySettings, io: RuleIO) -> dict:
    """Rule adacs_similarity: every explanation of one file against its neuron's reference."""
    neurons = sorted({(x["layer"], x["neuron"]) for x in read_jsonl(io.input["explanations"])})
    references = load_references(settings.reference, neurons=neurons, reference_files=list(io.input["references"]))
    return run_similarity_job(settings, io, references)


def run_puzzle_similarity_job(settings: SimilaritySettings, io: RuleIO) -> dict:
    """Rule puzzle_similarity: every puzzle explanation against the puzzle's ground truth."""
    return run_similarity_job(settings, io, None)


def run_similarity_job(settings: SimilaritySettings, io: RuleIO, references: dict | None) -> dict:
    """Similarity of every explanation line to its reference: ``references[(layer, neuron)]``, or, for puzzles,
    the line's own ``ground_truth``."""
    from autointerp.llm.roles import open_client
    from autointerp.similarity.references import degenerate_share

    out_path, usage_path = io.output["similarity"], io.output["usage"]
    lines = [x for x in read_jsonl(io.input["explanations"]) if x.get("valid", True)]
    share = degenerate_share(references) if references is not None else math.nan
    degenerate = bool(share > DEGENERATE_SHARE) and len(references or {}) >= 3
    if degenerate:
        log.warning("degenerate reference set: one reference text stands for %.0f%% of %d neurons (%s)",
                    100 * share, len(references), settings.reference.kind)
    pairs = []
    for x in lines:
        ref = x.get("ground_truth") if references is None else references.get((x["layer"], x["neuron"]))
        pairs.append((x["explanation"], ref))
    label = job_label(io)
    with open_client(settings.embedder, settings.role, cache_dir=settings.cache_dir,
                     rate_share=io.rate_share) as client:
        client.start_progress(math.ceil(len({t for pair in pairs for t in pair if t}) / BATCH_SIZE), label)
        sims = asyncio.run(similarity_to_reference(client, pairs, normalise=settings.normalise)) if pairs else []
        client.finish_progress()
        totals = {k: v for k, v in client.ledger.totals().items() if k != "by_role"}
    rows = [{"layer": x["layer"], "neuron": x["neuron"], "format": x["format"], "sample": x.get("sample", 0),
             "puzzle": x.get("puzzle"), "explanation": x["explanation"], "reference": ref, "similarity": s,
             "reference_share": share, "reference_degenerate": degenerate}
            for x, (_, ref), s in zip(lines, pairs, sims)]
    atomic_write_parquet(pa.Table.from_pylist(rows, schema=SIM_SCHEMA), out_path)
    summary = {"explanations": len(rows), "missing_reference": sum(1 for _, r in pairs if r is None),
               "reference_degenerate": degenerate, **totals}
    console(f"{label}: {len(rows)} explanations compared, {summary['missing_reference']} without a reference")
    atomic_write_text(usage_path, json.dumps({"totals": summary}, indent=1, sort_keys=True) + "\n")
    return summary
