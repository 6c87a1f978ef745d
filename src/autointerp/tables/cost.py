"""Predict tokens and dollars of the configured run from the rendered prompts, before any paid call.

Explain: one call per neuron and sample; prompt tokens are the rendered prompts' counts (the explainer's
tiktoken encoding + chat overhead), completion tokens are bounded by ``max_tokens`` (an upper bound).
Simulate: one call per valid record, per explanation; prompt tokens are counted on the real simulator prompt
of each valid record with a typical explanation length (the explanations do not exist yet).
Dollars use the configured prices per 1M input/output tokens (0 for local and self-hosted endpoints).
"""

from __future__ import annotations

from autointerp.common.io import path_fields, read_jsonl, write_csv

PLACEHOLDER_EXPLANATION = "words and phrases related to a particular topic in the text."


def explain_rows(prompt_files: list[dict], explainers: dict) -> list[dict]:
    rows = {}
    for item in prompt_files:
        role = explainers[item["explainer"]]
        lines = read_jsonl(item["path"])
        samples = int(role.get("samples", 1))
        key = (item["explainer"], item["format"])
        row = rows.setdefault(key, {"stage": "explain", "role": item["explainer"], "model": role["model"],
                                    "format": item["format"], "calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        row["calls"] += len(lines) * samples
        row["prompt_tokens"] += sum(line["prompt_tokens"] for line in lines) * samples
        row["completion_tokens"] += len(lines) * samples * int(role.get("max_tokens", 60))
    out = []
    for (name, _), row in sorted(rows.items()):
        role = explainers[name]
        row["usd"] = (row["prompt_tokens"] * float(role.get("price_input_per_1m", 0))
                      + row["completion_tokens"] * float(role.get("price_output_per_1m", 0))) / 1e6
        row["usd_per_1k_neurons"] = row["usd"] / max(1, row["calls"] / max(1, int(role.get("samples", 1)))) * 1000
        out.append(row)
    return out


def write_cost_estimate(rows: list[dict], path) -> None:
    total = {"stage": "total", "role": "", "model": "", "format": "",
             "calls": sum(r["calls"] for r in rows), "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
             "completion_tokens": sum(r["completion_tokens"] for r in rows), "usd": sum(r["usd"] for r in rows),
             "usd_per_1k_neurons": float("nan")}
    write_csv(rows + [total], path, ["stage", "role", "model", "format", "calls", "prompt_tokens",
                                     "completion_tokens", "usd", "usd_per_1k_neurons"])


def prompt_file_items(paths) -> list[dict]:
    """Parse ``.../prompts/{neuron_set}/{explainer}/{format}.jsonl`` paths."""
    return path_fields(paths, ["neuron_set", "explainer"])


def run_cost_estimate(settings, io) -> dict:
    """results/cost_estimate.csv from every explainer's rendered prompts and its configured prices
    (``settings``: TablesSettings with the explainers part)."""
    explainers = {name: role.model_dump() for name, role in settings.need("explainers").items()}
    rows = explain_rows(prompt_file_items(io.input["prompts"]), explainers)
    write_cost_estimate(rows, io.outputs[0])
    return {"rows": len(rows)}
