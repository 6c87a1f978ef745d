"""Predict calls, tokens and dollars of every paid stage of the run before any paid call, and enforce the budget.

Counted from the prompts the run will actually send, with each role's tiktoken encoding and configured prices:
- ``explain`` / ``explain_puzzles``: one chat call per prompt and sample; prompt tokens are the rendered prompts'
  counts; completions are ``EXPECTED_EXPLANATION_TOKENS`` each (capped by ``max_tokens``). Upper bound: every
  call drawing all ``llm.max_extra_samples`` extra samples at ``max_tokens`` each.
- ``simulate_score``: one call per valid record per explanation, on the real simulator prompt of each record
  (``prompt_logprobs``: the all-at-once text, no completion; ``chat_logprobs``: the chat messages, and a reply of
  one ``token<TAB>value`` line per token). The explanation does not exist yet, so a typical one stands in;
  the upper bound puts an explanation of the explainer's ``max_tokens`` and, in chat mode, the reply cap.
- ``detection`` / ``fuzzing`` (rule classify): one chat call per explanation and scorer kind (detection, fuzzing), on the real examples of each
  neuron (its held-out records; autointerp.classify) with the stand-in explanation; the completion is one
  ``i: 0`` line per example, the bound the request's ``max_tokens``.
- ``adacs_similarity`` / ``puzzle_similarity``: embedding calls of 64 texts over the explanations and references.
Local roles (the embedded engine) cost nothing. The estimate ignores the response cache: a rerun whose calls are
cached spends less. Columns: docs/tables.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import lru_cache

from autointerp.common.io import path_fields, read_jsonl, write_csv
from autointerp.common.snakemake_io import console
from autointerp.prompts.tokens import count_chat_tokens, count_text_tokens, get_encoding
from autointerp.similarity.embeddings import BATCH_SIZE

# A stand-in for an explanation that does not exist yet: 12 cl100k tokens, close to the mean length of the
# paper's released explanations (cl100k: GPT-4 random 12.2, GPT-3.5 random 15.0, GPT-3.5 top-20 13.0 tokens).
PLACEHOLDER_EXPLANATION = "words and phrases related to a particular topic in the text."
EXPECTED_EXPLANATION_TOKENS = 15  # a completion: the explanation and its stop

COLUMNS = ["stage", "role", "model", "set", "explainer", "format", "calls", "prompt_tokens", "completion_tokens",
           "usd", "calls_max", "usd_max", "usd_per_1k_neurons"]


class BudgetError(RuntimeError):
    """The run's estimate exceeds ``llm.max_cost_usd``: no paid job may start."""


def _usd(role: dict, prompt_tokens: float, completion_tokens: float) -> float:
    if role.get("provider") == "local":
        return 0.0
    return (prompt_tokens * float(role.get("price_input_per_1m") or 0)
            + completion_tokens * float(role.get("price_output_per_1m") or 0)) / 1e6


def _row(stage, name, role, set_name, explainer, fmt, *, calls, prompt, completion, calls_max, prompt_max,
         completion_max, units) -> dict:
    usd = _usd(role, prompt, completion)
    return {"stage": stage, "role": name, "model": role["model"], "set": set_name, "explainer": explainer,
            "format": fmt,
            "calls": int(calls), "prompt_tokens": int(round(prompt)), "completion_tokens": int(round(completion)),
            "usd": usd, "calls_max": int(calls_max), "usd_max": _usd(role, prompt_max, completion_max),
            "usd_per_1k_neurons": usd / units * 1000 if units else float("nan")}


def explain_rows(prompt_files: list[dict], explainers: dict, *, max_extra_samples: int, stage: str = "explain",
                 samples: int | None = None) -> list[dict]:
    """One row per (set, explainer, format) prompt file; ``samples`` overrides the role's (puzzles)."""
    rows = []
    for item in prompt_files:
        role = explainers[item["explainer"]]
        lines = read_jsonl(item["path"])
        k = int(samples if samples is not None else role.get("samples", 1))
        max_tokens = int(role.get("max_tokens", 60))
        prompt = sum(line["prompt_tokens"] for line in lines) * k
        calls = len(lines) * k
        tries = 1 + max_extra_samples
        rows.append(_row(stage, item["explainer"], role, item["set"], item["explainer"], item["format"],
                         calls=calls, prompt=prompt, completion=calls * min(EXPECTED_EXPLANATION_TOKENS, max_tokens),
                         calls_max=calls * tries, prompt_max=prompt * tries,
                         completion_max=calls * tries * max_tokens, units=len(lines)))
    return rows


@lru_cache(maxsize=None)
def _placeholder(encoding: str, n_tokens: int) -> str:
    """An explanation of about ``n_tokens`` tokens (the upper bound's stand-in)."""
    words = (PLACEHOLDER_EXPLANATION + " ") * (n_tokens // 10 + 1)
    enc = get_encoding(encoding)
    return enc.decode(enc.encode(words)[:n_tokens])


def simulation_tokens(tokens: list[str], role: dict, explanation: str) -> tuple[int, int, int]:
    """(prompt tokens, expected completion tokens, completion cap) of one simulator call on one record."""
    from autointerp.simulate.prompts import build_chat_simulation_messages, build_simulator_prompt, escape_token
    from autointerp.simulate.runner import chat_max_tokens

    encoding = role.get("encoding", "cl100k_base")
    if role["mode"] == "prompt_logprobs":
        prompt = build_simulator_prompt(explanation, tokens)
        return count_text_tokens(prompt.text, encoding), 0, 0
    messages = build_chat_simulation_messages(explanation, tokens)
    reply = "\n".join(f"{escape_token(t)}\t0" for t in tokens)
    return count_chat_tokens(messages, encoding), count_text_tokens(reply, encoding), chat_max_tokens(len(tokens))


def simulate_rows(records_by_set: dict[str, dict], simulators: dict, explainers: dict,
                  explained: list[dict]) -> list[dict]:
    """One row per (set, explainer, simulator, format): every valid record of every neuron, once per sample."""
    per_neuron: dict[tuple, tuple] = {}  # (set, simulator, max_tokens) -> summed tokens over the set's records
    rows = []
    for item in explained:
        records = records_by_set[item["set"]]
        explainer = explainers[item["explainer"]]
        k = int(explainer.get("samples", 1))
        for sim_name, sim in sorted(simulators.items()):
            key = (item["set"], sim_name, int(explainer.get("max_tokens", 60)))
            if key not in per_neuron:
                # The bound's prompts (a max_tokens explanation) are built only where they cost something.
                long = _placeholder(sim.get("encoding", "cl100k_base"), key[2]) if _usd(sim, 1, 1) else None
                calls = prompt = completion = prompt_max = completion_max = 0
                for entry in records.values():
                    for rec in entry["valid"]:
                        p, c, cap = simulation_tokens(list(rec.tokens), sim, PLACEHOLDER_EXPLANATION)
                        calls, prompt, completion = calls + 1, prompt + p, completion + c
                        prompt_max += simulation_tokens(list(rec.tokens), sim, long)[0] if long else p
                        completion_max += cap
                per_neuron[key] = (calls, prompt, completion, prompt_max, completion_max)
            calls, prompt, completion, prompt_max, completion_max = per_neuron[key]
            rows.append(_row("simulate_score", sim_name, sim, item["set"], item["explainer"], item["format"],
                             calls=calls * k, prompt=prompt * k, completion=completion * k, calls_max=calls * k,
                             prompt_max=prompt_max * k, completion_max=completion_max * k,
                             units=len(records)))
    return rows


def classify_tokens(kind: str, valid: list[dict], role: dict, explanation: str, *, layer: int = 0,
                    neuron: int = 0) -> tuple[int, int, int]:
    """(prompt tokens, expected completion tokens, completion cap) of one scorer call on one neuron's held-out
    records (``{"source", "excerpt_id", "tokens", "activations"}``)."""
    from autointerp.classify.core import detection_examples, fuzzing_examples, render_messages
    from autointerp.classify.runner import max_answer_tokens

    import numpy as np

    if kind == "detection":
        examples = detection_examples(valid, [])
    else:
        examples = fuzzing_examples(valid, [], np.random.default_rng([int(role.get("seed", 0)), layer, neuron]))
    if not examples:
        return 0, 0, 0
    encoding = role.get("encoding", "cl100k_base")
    reply = "\n".join(f"{i}: 0" for i in range(1, len(examples) + 1))
    return (count_chat_tokens(render_messages(kind, explanation, examples), encoding),
            count_text_tokens(reply, encoding), max_answer_tokens(len(examples)))


def classify_rows(records_by_set: dict[str, dict], scorers: dict, explainers: dict,
                  explained: list[dict]) -> list[dict]:
    """One row per (set, explainer, scorer, kind, format): one call per explanation (neuron and sample)."""
    from autointerp.classify.stage import held_out

    per_set: dict[tuple, tuple] = {}
    rows = []
    for item in explained:
        records = records_by_set[item["set"]]
        explainer = explainers[item["explainer"]]
        k = int(explainer.get("samples", 1))
        for name, role in sorted(scorers.items()):
            if role.get("neuron_sets") and item["set"] not in role["neuron_sets"]:
                continue
            for kind in role.get("kinds") or ("detection", "fuzzing"):
                key = (item["set"], name, kind, int(explainer.get("max_tokens", 60)))
                if key not in per_set:
                    long = _placeholder(role.get("encoding", "cl100k_base"), key[3]) if _usd(role, 1, 1) else None
                    calls = prompt = completion = prompt_max = completion_max = 0
                    for nid, entry in records.items():
                        valid = held_out(entry)
                        where = {"layer": nid.layer, "neuron": nid.neuron}
                        p, c, cap = classify_tokens(kind, valid, role, PLACEHOLDER_EXPLANATION, **where)
                        calls, prompt, completion = calls + (1 if p else 0), prompt + p, completion + c
                        prompt_max += classify_tokens(kind, valid, role, long, **where)[0] if long else p
                        completion_max += cap
                    per_set[key] = (calls, prompt, completion, prompt_max, completion_max)
                calls, prompt, completion, prompt_max, completion_max = per_set[key]
                rows.append(_row(kind, name, role, item["set"], item["explainer"], item["format"],
                                 calls=calls * k, prompt=prompt * k, completion=completion * k, calls_max=calls * k,
                                 prompt_max=prompt_max * k, completion_max=completion_max * k,
                                 units=len(records)))
    return rows


def embed_rows(stage: str, embedder_name: str, embedder: dict, set_name: str, items: list[dict],
               explainers: dict, n_units: int, reference_tokens: int | None = None,
               samples: int | None = None) -> list[dict]:
    """Embedding calls of one similarity job per (explainer, format): explanations plus references
    (``reference_tokens`` None: one reference of the stand-in explanation's length per unit)."""
    typical = count_text_tokens(PLACEHOLDER_EXPLANATION, embedder.get("encoding", "cl100k_base"))
    if reference_tokens is None:
        reference_tokens = n_units * typical
    rows = []
    for item in items:
        explainer = explainers[item["explainer"]]
        k = int(samples if samples is not None else explainer.get("samples", 1))
        texts = n_units * k + n_units
        tokens = n_units * k * typical + reference_tokens
        tokens_max = n_units * k * int(explainer.get("max_tokens", 60)) + reference_tokens
        calls = math.ceil(texts / BATCH_SIZE)
        rows.append(_row(stage, embedder_name, embedder, set_name, item["explainer"], item["format"],
                         calls=calls, prompt=tokens, completion=0, calls_max=calls, prompt_max=tokens_max,
                         completion_max=0, units=n_units))
    return rows


def total_row(rows: list[dict]) -> dict:
    return {"stage": "total", "role": "", "model": "", "set": "", "explainer": "", "format": "",
            **{k: sum(r[k] for r in rows) for k in ("calls", "prompt_tokens", "completion_tokens", "usd",
                                                     "calls_max", "usd_max")},
            "usd_per_1k_neurons": float("nan")}


def by_stage(rows: list[dict]) -> dict[str, tuple[float, float, int]]:
    out: dict[str, list] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        s = out[r["stage"]]
        s[0], s[1], s[2] = s[0] + r["usd"], s[1] + r["usd_max"], s[2] + r["calls"]
    return {k: tuple(v) for k, v in out.items()}


def summary_lines(rows: list[dict], where: str) -> list[str]:
    total = total_row(rows)
    lines = [f"cost estimate ({where}): ${total['usd']:.2f} for {total['calls']:,} calls "
             f"(at most ${total['usd_max']:.2f} if every reply needed all extra samples)"]
    for stage, (usd, usd_max, calls) in by_stage(rows).items():
        lines.append(f"  {stage:<18} ${usd:>10.2f}  (max ${usd_max:.2f})  {calls:>9,} calls")
    return lines


def check_budget(rows: list[dict], budget: float | None, where: str) -> None:
    total = total_row(rows)
    if budget is not None and total["usd"] > budget:
        stages = ", ".join(f"{s} ${usd:.2f}" for s, (usd, _, _) in by_stage(rows).items() if usd)
        raise BudgetError(f"the estimated cost ${total['usd']:.2f} exceeds llm.max_cost_usd = ${budget:.2f} "
                          f"({stages}); no paid job was started. Raise the budget or shrink the run; the "
                          f"estimate by stage and format is printed above ({where} is written only within budget)")


def write_cost_estimate(rows: list[dict], path) -> None:
    write_csv(rows + [total_row(rows)], path, COLUMNS)


def run_cost_estimate(settings, io) -> dict:
    """results/<run>/cost_estimate.csv from the prompts to be explained, the records to be simulated and the
    texts to be embedded, priced per role (``settings``: TablesSettings with the ``cost`` part)."""
    from autointerp.extract.records import load_records

    cost = settings.need("cost")
    explainers = {k: v.model_dump() for k, v in cost.explainers.items()}
    simulators = {k: v.model_dump() for k, v in cost.simulators.items()}
    embedders = {k: v.model_dump() for k, v in cost.embedders.items()}
    prompts = path_fields(io.input.get("prompts") or [], ["set", "explainer"])
    puzzles = path_fields(io.input.get("puzzle_prompts") or [], ["set", "prompts", "explainer"])
    records_by_set = {p.rsplit("/", 1)[-1].removesuffix(".parquet"): load_records(p)
                      for p in io.input.get("records") or []}

    rows = explain_rows(prompts, explainers, max_extra_samples=cost.max_extra_samples)
    rows += explain_rows(puzzles, explainers, max_extra_samples=cost.max_extra_samples, stage="explain_puzzles",
                         samples=cost.puzzle_samples)
    compared = [p for p in prompts if p["explainer"] in cost.compared]
    rows += simulate_rows(records_by_set, simulators, explainers, compared)
    rows += classify_rows(records_by_set, {k: v.model_dump() for k, v in cost.scorers.items()}, explainers, compared)
    if cost.adacs_embedder:
        emb = embedders[cost.adacs_embedder]
        for set_name in cost.adacs_sets:
            rows += embed_rows("adacs_similarity", cost.adacs_embedder, emb, set_name,
                               [p for p in compared if p["set"] == set_name], explainers,
                               len(records_by_set.get(set_name) or {}))
    if cost.puzzle_embedder:
        emb = embedders[cost.puzzle_embedder]
        for set_name in sorted({p["set"] for p in puzzles}):
            items = [p for p in puzzles if p["set"] == set_name and p["explainer"] in cost.compared]
            if not items:
                continue
            lines = read_jsonl(items[0]["path"])
            truth = sum(count_text_tokens(str(line.get("ground_truth") or ""), emb.get("encoding", "cl100k_base"))
                        for line in lines)
            rows += embed_rows("puzzle_similarity", cost.puzzle_embedder, emb, set_name, items, explainers,
                               len(lines), truth, samples=cost.puzzle_samples)

    out = io.outputs[0]
    for line in summary_lines(rows, out):
        console(line)
    check_budget(rows, cost.max_cost_usd, out)
    write_cost_estimate(rows, out)
    total = total_row(rows)
    return {"rows": len(rows), "usd": round(total["usd"], 6), "usd_max": round(total["usd_max"], 6)}
