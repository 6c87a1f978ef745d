"""The explain stage: each neuron's rendered prompt -> the explainer's completion(s) -> explanations JSONL.

Defaults follow the paper (HARMONY chat messages, temperature 1, top_p 1, max_tokens 60, one sample). The
reply continues "the main thing this neuron does is find", so the explanation is that continuation: its
first non-empty line, stripped (the raw completion is kept beside it). Empty or unusable replies (no letters,
or only the prompt's own phrase echoed back) are marked invalid and retried with further samples (distinct
cache entries), up to ``max_extra_samples``; invalid ones are never passed on as explanations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field

from autointerp.common.io import atomic_write_text, read_jsonl
from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO, console, job_label
from autointerp.llm import EndpointError, run_many
from autointerp.llm.settings import ExplainerRole

log = logging.getLogger("autointerp.explain.stage")

_PREFIX = "the main thing this neuron does is find"


class ExplainError(RuntimeError):
    pass


def clean_explanation(raw: str) -> str | None:
    """The usable explanation in a completion, or None if there is none."""
    for line in raw.splitlines():
        text = line.strip()
        if text:
            break
    else:
        return None
    if text.lower().startswith(_PREFIX):
        text = text[len(_PREFIX):].strip()
    if not re.search(r"[A-Za-z]", text) or len(text) < 2:
        return None
    return text


class ImportedPart(Settings):
    """imported_explanations.<name> for one job: who wrote the explanations and how the file names its columns."""

    model: str
    formats: list[str] | None = None
    columns: dict[str, str] | None = None


class ExplainSettings(Settings):
    """One explainer's settings for one job (neuron prompts or puzzle prompts), or an import's (``imported``)."""

    explainer: str
    role: ExplainerRole | None = None  # None for imported explanations
    imported: ImportedPart | None = None
    samples: int  # the role's samples; puzzles.samples for puzzle prompts
    max_extra_samples: int
    max_invalid_fraction: float
    max_failed_fraction: float
    cache_dir: str

    @classmethod
    def from_config(cls, config, wildcards) -> "ExplainSettings":
        name = wildcards["explainer"]
        llm = config["llm"]
        if name in (config.get("imported_explanations") or {}):
            spec = config["imported_explanations"][name]
            part = ImportedPart(model=spec["model"], formats=spec.get("formats"), columns=spec.get("columns"))
            return cls(explainer=name, imported=part, samples=1, max_extra_samples=0,
                       max_invalid_fraction=llm["max_invalid_fraction"], max_failed_fraction=0.0,
                       cache_dir=llm["cache_dir"])
        role = ExplainerRole.model_validate(config["explainers"][name])
        samples = config["puzzles"]["samples"] if "puzzle_set" in wildcards else role.samples
        return cls(explainer=name, role=role, samples=samples, max_extra_samples=llm["max_extra_samples"],
                   max_invalid_fraction=llm["max_invalid_fraction"],
                   max_failed_fraction=llm["max_failed_fraction"], cache_dir=llm["cache_dir"])


@dataclass
class ExplainOutcome:
    lines: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    totals: dict = field(default_factory=dict)


def sample_seed(seed: int | None, prompt: dict, index: int) -> int | None:
    """The request seed of sample ``index`` of one prompt: sha256 of ``seed|layer|neuron|format|index``, first 4
    bytes, as a 31-bit integer. Every (neuron, format, sample) gets its own repeatable draw: one seed shared by
    all neurons made a small explainer write the same words for 5 of 6 neurons (same random numbers, similar
    prompts), and sharing it across formats would couple the samples the formats are compared on."""
    if seed is None:
        return None
    material = f"{seed}|{prompt['layer']}|{prompt['neuron']}|{prompt['format']}|{index}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big") >> 1


async def _explain_one(client, prompt: dict, sample: int, s: ExplainSettings, model: str) -> tuple[dict | None, list]:
    tried = []
    r = s.role
    for extra in range(s.max_extra_samples + 1):
        # Extra samples (for unusable replies) take indices after every regular sample: never a regular one's seed.
        index = sample if extra == 0 else s.samples + sample * s.max_extra_samples + extra - 1
        result = await client.chat(prompt["messages"], temperature=r.temperature, top_p=r.top_p,
                                   max_tokens=r.max_tokens, seed=sample_seed(r.seed, prompt, index),
                                   sample_index=index)
        explanation = clean_explanation(result.text)
        record = {
            "layer": prompt["layer"], "neuron": prompt["neuron"], "format": prompt["format"], "sample": sample,
            "sample_index": index, "explanation": explanation, "raw_completion": result.text,
            "valid": explanation is not None, "model": model, "finish_reason": result.finish_reason,
            "params": {"temperature": r.temperature, "top_p": r.top_p, "max_tokens": r.max_tokens,
                       "seed": r.seed, "request_seed": sample_seed(r.seed, prompt, index)},
            # Only what the same config reproduces; latency and cache hits are measurements (the usage file).
            "usage": {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens},
            "cache_key": result.cache_key, "prompt_hash": prompt.get("prompt_hash"),
        }
        for extra_key in ("puzzle", "ground_truth"):  # puzzles carry their name and answer along
            if extra_key in prompt:
                record[extra_key] = prompt[extra_key]
        if explanation is not None:
            return record, tried
        tried.append(record)
    return None, tried


async def explain_all(client, prompts: list[dict], settings: ExplainSettings, model: str) -> ExplainOutcome:
    jobs = [(p, k) for p in prompts for k in range(settings.samples)]
    results = await run_many([lambda p=p, k=k: _explain_one(client, p, k, settings, model) for p, k in jobs],
                             concurrency=max(1, client.cfg.concurrency))
    out = ExplainOutcome()
    for (prompt, sample), res in zip(jobs, results):
        if isinstance(res, EndpointError):
            raise res  # the endpoint itself is unusable: one line, not one failure per prompt
        if isinstance(res, BaseException):
            out.failures.append({"layer": prompt["layer"], "neuron": prompt["neuron"], "format": prompt["format"],
                                 "sample": sample, "kind": "call_failed", "reason": f"{type(res).__name__}: {res}"})
            continue
        valid, invalid = res
        if valid is not None:
            out.lines.append(valid)
        else:
            out.failures.append({"layer": prompt["layer"], "neuron": prompt["neuron"], "format": prompt["format"],
                                 "sample": sample, "kind": "invalid", "reason": "no usable explanation",
                                 "raw_completions": [r["raw_completion"] for r in invalid]})
    out.totals = client.ledger.totals()
    return out


def write_jsonl(path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows))


def unit(prompts: list[dict]) -> str:
    return "puzzles" if prompts and "puzzle" in prompts[0] else "neurons"


def run_explain_job(settings: ExplainSettings, io: RuleIO) -> dict:
    """Explain every prompt of ``io.input["prompts"]``; writes explanations, failures and usage."""
    from autointerp.llm.roles import open_client

    out_path, failures_path, usage_path = io.output["explanations"], io.output["failures"], io.output["usage"]
    prompts = read_jsonl(io.input["prompts"])
    engine = io.input.get("engine") or None
    label = job_label(io)
    with open_client(settings.explainer, settings.role, cache_dir=settings.cache_dir,
                     engine_dir=engine[0] if engine else None, threads=io.threads,
                     rate_share=io.rate_share) as client:
        client.start_progress(len(prompts) * settings.samples, label)
        outcome = asyncio.run(explain_all(client, prompts, settings, settings.role.model))
        client.finish_progress()
        calls = [dataclasses.asdict(r) for r in client.ledger.records]
    neurons = {(p["layer"], p["neuron"]) for p in prompts}
    ok = {(r["layer"], r["neuron"]) for r in outcome.lines}
    without = sorted(neurons - ok)
    failed = [f for f in outcome.failures if f["kind"] == "call_failed"]
    invalid = [f for f in outcome.failures if f["kind"] == "invalid"]
    summary = {"neurons": len(neurons), "explanations": len(outcome.lines), "failed_calls": len(failed),
               "invalid_samples": len(invalid), "neurons_without_explanation": len(without),
               **{k: v for k, v in outcome.totals.items() if k != "by_role"}}
    for failure in outcome.failures:
        log.warning("no explanation: %s", json.dumps(failure, ensure_ascii=False))
    console(f"{label}: {len(ok)}/{len(neurons)} {unit(prompts)} explained; {len(failed)} calls failed"
            + (f" ({failed[0]['reason']})" if failed else "") + f", {len(invalid)} samples without a usable reply")
    jobs = len(prompts) * settings.samples
    if failed and len(failed) / max(1, jobs) > settings.max_failed_fraction:
        # Snakemake deletes a failed job's outputs: the failures are in the rule's log (kept), not only in a file.
        raise ExplainError(
            f"{len(failed)} of {jobs} explain calls failed for good (first: {failed[0]['reason']}); the other "
            f"{jobs - len(failed)} are cached, so rerunning the same command retries only the failed ones "
            f"(limit llm.max_failed_fraction = {settings.max_failed_fraction:.0%}; each failure is in the log)")
    unusable = sorted({(f["layer"], f["neuron"]) for f in invalid} - ok)
    if neurons and len(unusable) / len(neurons) > settings.max_invalid_fraction:
        raise ExplainError(
            f"{len(unusable)} of {len(neurons)} {unit(prompts)} ended without a valid explanation "
            f"(limit llm.max_invalid_fraction = {settings.max_invalid_fraction:.0%}); the replies are in the "
            "rule's log: " + ", ".join(f"{layer}:{neuron}" for layer, neuron in unusable[:20]))
    write_jsonl(failures_path, outcome.failures)
    write_jsonl(out_path, sorted(outcome.lines, key=lambda r: (r["layer"], r["neuron"], r["sample"])))
    atomic_write_text(usage_path, json.dumps({"totals": summary, "calls": calls}, indent=1, sort_keys=True) + "\n")
    return summary


def run_import_explanations(settings: ExplainSettings, io: RuleIO) -> dict:
    """Rules import_explanations / import_puzzle_explanations: one format of an imported file, written as an
    explanations file (autointerp.explain.imported), its empty cells as the failures file, counts as usage."""
    from autointerp.explain.imported import read_neuron_explanations, read_puzzle_explanations

    fmt, part = io.wildcards["format"], settings.imported
    if "puzzles" in io.input:
        from autointerp.common.io import read_json

        puzzles = read_json(io.input["puzzles"])
        result = read_puzzle_explanations(io.input["file"], [fmt], model=part.model, columns=part.columns,
                                          puzzles=[(p["name"], p["explanation"]) for p in puzzles.values()])
        what = "puzzles"
    else:
        from autointerp.extract.neuron_sets import read_neuron_set

        result = read_neuron_explanations(io.input["file"], [fmt], model=part.model, columns=part.columns,
                                          neurons=read_neuron_set(io.input["neurons"]))
        what = "neurons"
    lines, failures = result.lines[fmt], result.failures[fmt]
    totals = {**result.counts, "explanations": len(lines), "empty_cells": len(failures), "file": io.input["file"],
              "model": part.model}
    explained = len({(x["layer"], x["neuron"]) for x in lines})
    console(f"{job_label(io)}: {explained} {what} from {io.input['file']}; {len(failures)} empty cells, "
            f"{result.counts['missing']} {what} of the set not in the file"
            + (f", {result.counts['not_in_set']} rows outside the set" if result.counts["not_in_set"] else ""))
    unusable = result.counts["explained"] - explained
    if result.counts["explained"] and unusable / result.counts["explained"] > settings.max_invalid_fraction:
        raise ExplainError(f"{io.input['file']}: {unusable} of {result.counts['explained']} {what} have an empty "
                           f"{fmt} cell (limit llm.max_invalid_fraction = {settings.max_invalid_fraction:.0%}); "
                           f"the cells are listed in the log")
    write_jsonl(io.output["failures"], failures)
    write_jsonl(io.output["explanations"], lines)
    atomic_write_text(io.output["usage"], json.dumps({"totals": totals}, indent=1, sort_keys=True) + "\n")
    return totals


def run_released_file(settings: None, io: RuleIO) -> dict:
    """Rule released_file: the pinned bytes of one of the paper's released files (autointerp.common.released),
    from the local copy the rule lists (released_dir) or downloaded."""
    from pathlib import Path

    from autointerp.common.released import fetch_released

    local = str(Path(io.inputs[0]).parent) if io.inputs else None
    return fetch_released(io.wildcards["name"], io.outputs[0], local)
