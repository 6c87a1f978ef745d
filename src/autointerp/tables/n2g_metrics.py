"""The N2G paper's own metrics per neuron set and method (firing precision, recall, F1 at normalised activation
0.5, and the simulator-style score), each metric's means paired over the neurons finite for every method."""

from __future__ import annotations

import csv
import math

from autointerp.common.io import path_fields, write_csv
from autointerp.common.snakemake_io import RuleIO
from autointerp.tables.pairing import paired_cells

METRICS = ("score", "firing_precision", "firing_recall", "firing_f1")


def _value(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def n2g_table(metric_files: list[str], out_path) -> list[dict]:
    """One row per neuron set and method: ``n_neurons`` (rows of the method), and per metric the mean over the
    neurons finite for every method of the set (``n_<metric>``; ``nan_dropped_<metric>`` left out)."""
    rows = []
    for item in path_fields(metric_files, ["neuron_set"]):
        with open(item["path"], newline="", encoding="utf-8") as fh:
            data = list(csv.DictReader(fh))
        methods = sorted({r["method"] for r in data})
        out = {m: {"neuron_set": item["neuron_set"], "method": m,
                   "n_neurons": sum(r["method"] == m for r in data)} for m in methods}
        for key in METRICS:
            by_method = {m: {(r["layer"], r["neuron"]): _value(r[key]) for r in data if r["method"] == m}
                         for m in methods}
            for m, cell in paired_cells(by_method, methods).items():
                out[m].update({f"mean_{key}": cell.mean, f"n_{key}": cell.n, f"nan_dropped_{key}": cell.nan_dropped})
        rows.extend(out[m] for m in methods)
    write_csv(rows, out_path, ["neuron_set", "method", "n_neurons"]
              + [f"{s}_{k}" for k in METRICS for s in ("mean", "n", "nan_dropped")])
    return rows


def run_n2g_table(settings: None, io: RuleIO) -> dict:
    """results/table_n2g.csv from every neuron set's N2G metrics.csv."""
    return {"rows": len(n2g_table(io.inputs, io.outputs[0]))}
