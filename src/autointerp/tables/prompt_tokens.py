"""Table 1: mean prompt tokens per (neuron set, explainer, format) and the ratio Original / format."""

from __future__ import annotations

import numpy as np

from autointerp.common.io import path_fields, read_jsonl, write_csv
from autointerp.common.snakemake_io import RuleIO
from autointerp.simulate.scoring import mean_sem


def table1(prompt_files: list[dict], out_path) -> list[dict]:
    """Mean prompt tokens ± SEM per (neuron set, explainer, format) and the ratio Original/format.

    ``prompt_files``: [{"neuron_set", "explainer", "format", "path"}]. Prompt tokens are cl100k/o200k counts of
    the chat messages plus OpenAI's chat overhead (3 per message + 3), with the few-shot examples included.
    """
    rows = []
    for item in prompt_files:
        lines = read_jsonl(item["path"])
        stats = mean_sem([line["prompt_tokens"] for line in lines])
        mean, sem = stats["mean"], stats["sem"]
        rows.append({"neuron_set": item["neuron_set"], "explainer": item["explainer"], "format": item["format"],
                     "n_neurons": len(lines), "mean_prompt_tokens": mean, "sem_prompt_tokens": sem,
                     "mean_omitted_few_shot_records": float(np.mean([line["omitted_few_shot_records"]
                                                                     for line in lines])) if lines else 0.0})
    for row in rows:
        ref = [r for r in rows if r["neuron_set"] == row["neuron_set"] and r["explainer"] == row["explainer"]
               and r["format"] == "Original"]
        row["ratio_vs_original"] = (ref[0]["mean_prompt_tokens"] / row["mean_prompt_tokens"]
                                    if ref and row["mean_prompt_tokens"] else float("nan"))
    write_csv(rows, out_path)
    return rows


def run_table1(settings: None, io: RuleIO) -> dict:
    """results/table1.csv from the compared explainers' rendered prompt files."""
    return {"rows": len(table1(path_fields(io.inputs, ["neuron_set", "explainer"]), io.outputs[0]))}
