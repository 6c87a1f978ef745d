"""The classify stage: explanations + held-out records -> per-explanation detection or fuzzing scores.

One job per neuron set x explainer x scorer x kind x format. Every explanation line is scored on its neuron's
examples (autointerp.classify.core) in one chat request. A neuron's examples do not depend on the explanation
(fuzzing's wrong marks are drawn from ``seed|layer|neuron``), so every format of a neuron is scored on the same
example mix: the formats' means are paired, and their chance floors are the same.
Outputs: a Parquet file of per-explanation metrics, floors, answers and usage (docs/classify.md), and a usage file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math

import numpy as np
import pyarrow as pa

from autointerp.classify.core import FLOOR_COLUMNS, METRICS, Example, detection_examples, fuzzing_examples
from autointerp.classify.runner import score_explanation
from autointerp.common.io import atomic_write_parquet, atomic_write_text, read_jsonl
from autointerp.common.records import NeuronId
from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO, console, job_label
from autointerp.extract.records import load_records
from autointerp.llm import EndpointError, LLMError, run_many
from autointerp.llm.settings import ScorerRole

log = logging.getLogger("autointerp.classify")

KINDS = ("detection", "fuzzing")


class ClassifySettings(Settings):
    """One scorer's settings for one job."""

    scorer: str
    kind: str
    role: ScorerRole
    cache_dir: str
    max_failed_fraction: float

    @classmethod
    def from_config(cls, config, wildcards) -> "ClassifySettings":
        name = wildcards["scorer"]
        return cls(scorer=name, kind=wildcards["kind"], role=ScorerRole.model_validate(config["scorers"][name]),
                   cache_dir=config["llm"]["cache_dir"], max_failed_fraction=config["llm"]["max_failed_fraction"])


class ClassifyError(RuntimeError):
    pass


def held_out(entry: dict) -> list[dict]:
    """A records entry's (autointerp.extract.records.load_records) valid records as the scorers' examples read them."""
    return [{"source": src, "excerpt_id": r.excerpt_id, "tokens": list(r.tokens), "activations": list(r.activations)}
            for r, src in zip(entry["valid"], entry["valid_sources"])]


def neuron_examples(kind: str, entry: dict, layer: int, neuron: int, seed: int) -> list[Example]:
    """A neuron's examples of one kind from its records entry."""
    valid = held_out(entry)
    train = [r.excerpt_id for r in entry["train"]]
    if kind == "detection":
        return detection_examples(valid, train)
    return fuzzing_examples(valid, train, np.random.default_rng([seed, layer, neuron]))


SCORE_SCHEMA = pa.schema([
    ("layer", pa.int32()), ("neuron", pa.int32()), ("format", pa.string()), ("sample", pa.int32()),
    ("explanation", pa.string()),
    *[(m, pa.float64()) for m in METRICS], *[(c, pa.float64()) for c in FLOOR_COLUMNS],
    ("n_examples", pa.int64()), ("n_positive", pa.int64()), ("n_unparseable", pa.int64()),
    ("tp", pa.int64()), ("fp", pa.int64()), ("tn", pa.int64()), ("fn", pa.int64()),
    ("excerpt_ids", pa.list_(pa.int64())), ("labels", pa.list_(pa.bool_())), ("answers", pa.list_(pa.bool_())),
    ("raw_answer", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("requests", pa.int64()),
])


async def _score_all(client, kind: str, lines: list[dict], examples: dict, role: ScorerRole):
    async def one(line):
        try:
            return line, await score_explanation(client, kind, line["explanation"],
                                                 examples[(line["layer"], line["neuron"])], seed=role.seed)
        except EndpointError:
            raise
        except LLMError as exc:  # a call failed for good: this explanation gets no score
            return line, exc

    if role.provider == "local":  # the embedded engine answers one request at a time, in a fixed order
        return [await one(line) for line in lines]
    results = await run_many([lambda line=line: one(line) for line in lines], concurrency=client.cfg.concurrency)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def run_classify_job(settings: ClassifySettings, io: RuleIO) -> dict:
    """Score every valid explanation of ``io.input["explanations"]`` with the job's scorer and kind."""
    from autointerp.llm.roles import open_client

    lines = [line for line in read_jsonl(io.input["explanations"]) if line.get("valid", True)]
    records = load_records(io.input["records"])
    examples = {}
    for line in lines:
        key = (line["layer"], line["neuron"])
        if key not in examples:
            examples[key] = neuron_examples(settings.kind, records[NeuronId(*key)], *key, settings.role.seed)
    engine = io.input.get("engine") or None
    label = job_label(io)
    with open_client(settings.scorer, settings.role, cache_dir=settings.cache_dir,
                     engine_dir=engine[0] if engine else None, threads=io.threads,
                     rate_share=io.rate_share) as client:
        client.start_progress(len(lines), label)
        results = asyncio.run(_score_all(client, settings.kind, lines, examples, settings.role))
        client.finish_progress()
        calls = [dataclasses.asdict(r) for r in client.ledger.records]
        totals = {k: v for k, v in client.ledger.totals().items() if k != "by_role"}
    failed = [(line, r) for line, r in results if isinstance(r, BaseException)]
    for line, exc in failed:
        log.warning("no %s score for %s:%s sample %s: %s", settings.kind, line["layer"], line["neuron"],
                    line["sample"], exc)
    if failed and len(failed) / len(results) > settings.max_failed_fraction:
        raise ClassifyError(
            f"{len(failed)} of {len(results)} explanations could not be scored by {settings.scorer} "
            f"({settings.kind}; first: {failed[0][1]}); the calls that succeeded are cached, so rerunning the same "
            f"command retries only the failed ones (limit llm.max_failed_fraction = {settings.max_failed_fraction:.0%})")
    rows = []
    for line, r in results:
        if isinstance(r, BaseException):
            continue
        ex = examples[(line["layer"], line["neuron"])]
        rows.append({"layer": line["layer"], "neuron": line["neuron"], "format": line["format"],
                     "sample": line["sample"], "explanation": line["explanation"],
                     **{k: r[k] for k in SCORE_SCHEMA.names if k in r},
                     "excerpt_ids": [e.excerpt_id for e in ex], "labels": [e.label for e in ex]})
    atomic_write_parquet(pa.Table.from_pylist(rows, schema=SCORE_SCHEMA), io.output["scores"])
    unparseable = sum(r["n_unparseable"] for r in rows)
    answered = sum(r["n_examples"] for r in rows)
    mean_ba = float(np.nanmean([r["balanced_accuracy"] for r in rows])) if rows else math.nan
    console(f"{label}: {len(rows)}/{len(results)} explanations scored; mean balanced accuracy "
            f"{mean_ba:.3f} (chance 0.5); {unparseable}/{answered} answers unparseable")
    summary = {"explanations": len(rows), "failed_explanations": len(failed), "examples": answered,
               "unparseable_answers": unparseable, "kind": settings.kind, **totals}
    atomic_write_text(io.output["usage"],
                      json.dumps({"totals": summary, "calls": calls}, indent=1, sort_keys=True) + "\n")
    return summary
