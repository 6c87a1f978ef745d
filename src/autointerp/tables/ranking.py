"""Ranking tables: Table 2 (simulate-and-score), its paired comparisons, and Table 6 (ranks over evaluations).

Table 6 knows nothing about individual evaluations: it reads whatever tables the evaluation registry
(``autointerp.tables.evaluations``) lists, so a new evaluation (AdaCS, puzzles, human ratings, N2G) adds columns
without any edit of the Table 6 rule.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq

from autointerp.common.io import path_fields, write_csv
from autointerp.simulate.scoring import mean_sem, paired_comparison


def score_file_items(paths) -> list[dict]:
    """Parse ``.../scores/{neuron_set}/{explainer}/{simulator}/{format}.parquet``."""
    return path_fields(paths, ["neuron_set", "explainer", "simulator"])


def neuron_scores(path) -> dict[tuple[int, int], float]:
    """Per-neuron score: the mean over its samples' scores (NaN if every sample is NaN)."""
    by = defaultdict(list)
    for row in pq.read_table(path, columns=["layer", "neuron", "score"]).to_pylist():
        by[(row["layer"], row["neuron"])].append(row["score"])
    out = {}
    for key, values in by.items():
        finite = [v for v in values if v is not None and math.isfinite(v)]
        out[key] = float(np.mean(finite)) if finite else float("nan")
    return out


def table2(items: list[dict], out_path, paired_path, *, n_boot: int = 10000,
           methods: list[dict] | None = None) -> list[dict]:
    """``methods``: score files of explanation methods that need no explainer or simulator (N2G, token
    lookup: ``{"neuron_set", "format", "path"}``); they join every explainer/simulator group as extra rows."""
    groups_seen = sorted({(i["explainer"], i["simulator"]) for i in items})
    items = list(items) + [{**m, "explainer": e, "simulator": sim} for m in (methods or [])
                           for e, sim in groups_seen]
    sets = sorted({i["neuron_set"] for i in items})
    rows: dict[tuple, dict] = {}
    per = {}
    for item in items:
        scores = neuron_scores(item["path"])
        per[(item["explainer"], item["simulator"], item["neuron_set"], item["format"])] = scores
        stats = mean_sem(list(scores.values()))
        row = rows.setdefault((item["explainer"], item["simulator"], item["format"]),
                              {"explainer": item["explainer"], "simulator": item["simulator"], "format": item["format"]})
        row[f"{item['neuron_set']}_mean"] = stats["mean"]
        row[f"{item['neuron_set']}_sem"] = stats["sem"]
        row[f"{item['neuron_set']}_n"] = stats["n"]
        row[f"{item['neuron_set']}_nan"] = stats["n_nan"]
    for row in rows.values():
        means = [row.get(f"{s}_mean", float("nan")) for s in sets]
        finite = [m for m in means if math.isfinite(m)]
        row["average"] = float(np.mean(finite)) if finite else float("nan")
    columns = ["explainer", "simulator", "format"] + [f"{s}_{k}" for s in sets for k in ("mean", "sem", "n", "nan")]
    columns.append("average")
    out = sorted(rows.values(), key=lambda r: (r["explainer"], r["simulator"], r["format"]))
    write_csv(out, out_path, columns)
    paired = []
    groups = defaultdict(dict)
    for (explainer, simulator, neuron_set, fmt), scores in per.items():
        groups[(explainer, simulator, neuron_set)][fmt] = scores
    for (explainer, simulator, neuron_set), by_format in sorted(groups.items()):
        for a, b in itertools.combinations(sorted(by_format), 2):
            cmp = paired_comparison(by_format[a], by_format[b], n_boot=n_boot, seed=0)
            paired.append({"explainer": explainer, "simulator": simulator, "neuron_set": neuron_set,
                           "format_a": a, "format_b": b, **cmp})
    write_csv(paired, paired_path, ["explainer", "simulator", "neuron_set", "format_a", "format_b", "n", "mean_a",
                                    "mean_b", "mean_diff", "ci_low", "ci_high", "wilcoxon_statistic", "wilcoxon_z",
                                    "wilcoxon_p", "n_nonzero", "n_excluded_nonfinite"])
    return out


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def rank_formats(values: dict[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Rank 1 = best. Ties share the average of the ranks they span; NaN values get no rank."""
    finite = {f: v for f, v in values.items() if v is not None and math.isfinite(v)}
    ordered = sorted(finite, key=lambda f: -finite[f] if higher_is_better else finite[f])
    ranks, i = {}, 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and finite[ordered[j + 1]] == finite[ordered[i]]:
            j += 1
        for f in ordered[i:j + 1]:
            ranks[f] = (i + 1 + j + 1) / 2
        i = j + 1
    return ranks


def table6(columns: dict[str, tuple[dict[str, float], bool]], out_path) -> list[dict]:
    """``columns``: name -> ({format: value}, higher_is_better). Writes ranks per column and the average rank."""
    formats = sorted({f for values, _ in columns.values() for f in values})
    ranked = {name: rank_formats(values, hib) for name, (values, hib) in columns.items()}
    rows = []
    for fmt in formats:
        row = {"format": fmt}
        got = []
        for name in columns:
            r = ranked[name].get(fmt)
            row[name] = r if r is not None else float("nan")
            if r is not None:
                got.append(r)
        row["average_rank"] = float(np.mean(got)) if got else float("nan")
        row["n_evaluations"] = len(got)
        rows.append(row)
    rows.sort(key=lambda r: (r["average_rank"] if math.isfinite(r["average_rank"]) else 1e9, r["format"]))
    write_csv(rows, out_path, ["format", *columns, "average_rank", "n_evaluations"])
    return rows
