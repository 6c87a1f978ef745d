"""The simulate-and-score stage: explanations + valid records -> per-token predictions and per-neuron scores.

For every explanation line (neuron, sample) the simulator predicts the neuron on each of the neuron's valid
records (5 top + 5 random, from the foundation's split); the score is one Pearson correlation over all valid
tokens pooled (the reference's ``ev_correlation_score``), with top-only and random-only correlations beside it.
Outputs (Parquet): per-neuron scores, and per-token predictions (expected value, digit distribution, flag).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math

import numpy as np
import pyarrow as pa

from autointerp.common.io import atomic_write_parquet, atomic_write_text, read_jsonl
from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO, console, job_label
from autointerp.llm import EndpointError, LLMError, run_many
from autointerp.llm.settings import SimulatorRole
from autointerp.extract.records import load_records
from autointerp.simulate.scoring import score_sequence_simulations
from autointerp.simulate import simulate_sequences

log = logging.getLogger("autointerp.simulate")


class SimulateSettings(Settings):
    """One simulator's settings for one job."""

    simulator: str
    role: SimulatorRole
    cache_dir: str
    max_failed_fraction: float

    @classmethod
    def from_config(cls, config, wildcards) -> "SimulateSettings":
        name = wildcards["simulator"]
        return cls(simulator=name, role=SimulatorRole.model_validate(config["simulators"][name]),
                   cache_dir=config["llm"]["cache_dir"], max_failed_fraction=config["llm"]["max_failed_fraction"])


class SimulateError(RuntimeError):
    pass


async def _simulate_all(client, explanations: list[dict], records: dict, role: SimulatorRole):
    async def one(line):
        entry = _entry(records, line)
        try:
            sims = await simulate_sequences(client, line["explanation"], [r.tokens for r in entry["valid"]],
                                        mode=role.mode, top_logprobs=role.top_logprobs, seed=role.seed,
                                        # No more tasks than the client sends at once: with the embedded engine
                                        # (one at a time) requests then reach it in a fixed order.
                                        concurrency=client.cfg.concurrency)
        except EndpointError:
            raise  # the endpoint is unusable: one line for the whole job
        except LLMError as exc:  # a call failed for good: this explanation gets no score
            return line, entry, exc
        return line, entry, sims

    if role.provider == "local":
        # The embedded engine: neurons one after another keep its prefix cache warm (sequences within a neuron run
        # concurrently).
        return [await one(line) for line in explanations]
    # An endpoint: neurons side by side, so the role's whole concurrency is in use (a neuron has only ~10 records:
    # one at a time, a chunk ran at a third of concurrency 32; benchmarks/bench_scale.py). The client bounds the
    # requests in flight; results keep the explanations' order.
    results = await run_many([lambda line=line: one(line) for line in explanations],
                             concurrency=client.cfg.concurrency)
    for r in results:
        if isinstance(r, BaseException):
            raise r  # EndpointError, or a bug: never a silently missing neuron
    return results


def _entry(records: dict, line: dict) -> dict:
    from autointerp.common.records import NeuronId

    return records[NeuronId(line["layer"], line["neuron"])]


def run_simulate_job(settings: SimulateSettings, io: RuleIO) -> dict:
    """Simulate and score every valid explanation of ``io.input["explanations"]`` on its neuron's valid records."""
    from autointerp.llm.roles import open_client

    scores_path, predictions_path, usage_path = io.output["scores"], io.output["predictions"], io.output["usage"]
    explanations = [line for line in read_jsonl(io.input["explanations"]) if line.get("valid", True)]
    records = load_records(io.input["records"])
    mode = settings.role.mode
    engine = io.input.get("engine") or None
    label = job_label(io)
    with open_client(settings.simulator, settings.role, cache_dir=settings.cache_dir,
                     engine_dir=engine[0] if engine else None, threads=io.threads,
                     rate_share=io.rate_share) as client:
        client.start_progress(sum(len(_entry(records, line)["valid"]) for line in explanations), label)
        results = asyncio.run(_simulate_all(client, explanations, records, settings.role))
        client.finish_progress()
        calls = [dataclasses.asdict(r) for r in client.ledger.records]
        totals = {k: v for k, v in client.ledger.totals().items() if k != "by_role"}
    failed = [(line, sims) for line, _, sims in results if isinstance(sims, BaseException)]
    for line, exc in failed:
        log.warning("no score for %s:%s sample %s: %s", line["layer"], line["neuron"], line["sample"], exc)
    console(f"{label}: {len(results) - len(failed)}/{len(results)} explanations scored; {len(failed)} failed"
            + (f" ({failed[0][1]})" if failed else ""))
    if failed and len(failed) / len(results) > settings.max_failed_fraction:
        raise SimulateError(
            f"{len(failed)} of {len(results)} explanations could not be simulated (first: {failed[0][1]}); the "
            "calls that succeeded are cached, so rerunning the same command retries only the failed ones (limit "
            f"llm.max_failed_fraction = {settings.max_failed_fraction:.0%}; each failure is in the log)")
    results = [r for r in results if not isinstance(r[2], BaseException)]
    score_rows, token_rows = [], {k: [] for k in (
        "layer", "neuron", "format", "sample", "record", "source", "excerpt_id", "position", "token",
        "true_activation", "expected_value", "flag", "distribution")}
    for line, entry, sims in results:
        true = [r.activations for r in entry["valid"]]
        sources = entry["valid_sources"]
        scored = score_sequence_simulations(true, sims, sources)
        score_rows.append({"layer": line["layer"], "neuron": line["neuron"], "format": line["format"],
                           "sample": line["sample"], "explanation": line["explanation"],
                           **{k: _num(v) for k, v in scored.items()}})
        for i, (rec, sim, src) in enumerate(zip(entry["valid"], sims, sources)):
            for j, tok in enumerate(sim.tokens):
                token_rows["layer"].append(line["layer"])
                token_rows["neuron"].append(line["neuron"])
                token_rows["format"].append(line["format"])
                token_rows["sample"].append(line["sample"])
                token_rows["record"].append(i)
                token_rows["source"].append(src)
                token_rows["excerpt_id"].append(rec.excerpt_id)
                token_rows["position"].append(j)
                token_rows["token"].append(tok)
                token_rows["true_activation"].append(float(rec.activations[j]))
                ev = sim.expected_values[j]
                token_rows["expected_value"].append(None if math.isnan(ev) else float(ev))
                token_rows["flag"].append(sim.flags[j])
                token_rows["distribution"].append(
                    [sim.distributions[j].get(k, 0.0) for k in range(11)] if sim.distributions[j] else None)
    score_table = pa.Table.from_pylist(score_rows, schema=SCORE_SCHEMA)
    token_schema = pa.schema([
        ("layer", pa.int32()), ("neuron", pa.int32()), ("format", pa.string()), ("sample", pa.int32()),
        ("record", pa.int32()), ("source", pa.string()), ("excerpt_id", pa.int64()), ("position", pa.int32()),
        ("token", pa.string()), ("true_activation", pa.float32()), ("expected_value", pa.float64()),
        ("flag", pa.string()), ("distribution", pa.list_(pa.float64(), 11)),
    ])
    atomic_write_parquet(pa.table(token_rows, schema=token_schema), predictions_path)
    atomic_write_parquet(score_table, scores_path)
    summary = {"neurons": len({(r["layer"], r["neuron"]) for r in score_rows}), "explanations": len(score_rows),
               "nan_scores": int(sum(1 for r in score_rows if r["is_nan"])),
               "no_digit_tokens": int(sum(r["n_no_digit"] for r in score_rows)),
               "unaligned_tokens": int(sum(r["n_unaligned"] for r in score_rows)), "mode": mode,
               "failed_explanations": len(failed), **totals}
    atomic_write_text(usage_path, json.dumps({"totals": summary, "calls": calls}, indent=1, sort_keys=True) + "\n")
    return summary


SCORE_SCHEMA = pa.schema([
    ("layer", pa.int32()), ("neuron", pa.int32()), ("format", pa.string()), ("sample", pa.int32()),
    ("explanation", pa.string()), ("score", pa.float64()), ("score_top", pa.float64()),
    ("score_random", pa.float64()), ("rsquared", pa.float64()), ("absolute_dev_explained", pa.float64()),
    ("n_tokens", pa.int64()), ("n_top_tokens", pa.int64()), ("n_random_tokens", pa.int64()),
    ("n_unaligned", pa.int64()), ("n_no_digit", pa.int64()), ("n_merged", pa.int64()), ("n_sequences", pa.int64()),
    ("is_nan", pa.bool_()),
])


def _num(v):
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    return v
