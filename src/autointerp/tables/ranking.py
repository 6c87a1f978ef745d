"""Table 6: the rank of every prompt format in every evaluation column, and its average rank (Lee et al. 2023).

Only prompt formats are ranked, among themselves (1..k in every column, k = formats with a value there; ties
share the average rank, ``scipy.stats.rankdata``). Comparison methods (N2G, the token lookup, ...) never enter
the ranks: results/table6_comparison.csv sets each beside the formats' means on the same units, and
results/table6_columns.csv says what each column is, how many units (n) and how many NaN were dropped.

Table 6 knows nothing about individual evaluations: it reads whatever tables the evaluation registry
(``autointerp.tables.evaluations``) lists, so a new evaluation adds columns without any edit here.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy.stats import rankdata

from autointerp.common.io import write_csv
from autointerp.common.snakemake_io import RuleIO
from autointerp.tables.evaluations import Column, evaluation_columns
from autointerp.tables.pairing import finite
from autointerp.tables.settings import TablesSettings

COMPARISON_COLUMNS = ["column", "evaluation", "method", "format", "n", "nan_dropped", "method_mean", "format_mean",
                      "diff", "ci_low", "ci_high", "wilcoxon_p", "wilcoxon_method", "warning", "format_rank",
                      "is_best_format", "method_position", "n_formats"]
CHANCE_KEYS = ("always_yes", "always_no", "random", "random_low", "random_high")
COLUMNS_COLUMNS = ["column", "evaluation", "higher_is_better", "n_formats", "n", "nan_dropped", "comparison_methods",
                   *(f"chance_{k}" for k in CHANCE_KEYS)]


def rank_values(values: Mapping[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Rank 1 = best among the finite values; ties share the average of the ranks they span; NaN gets no rank."""
    names = sorted(n for n, v in values.items() if finite(v))
    if not names:
        return {}
    arr = np.array([values[n] for n in names], dtype=float)
    return dict(zip(names, (float(r) for r in rankdata(-arr if higher_is_better else arr, method="average"))))


def _comparison_rows(name: str, col: Column) -> list[dict]:
    """Column.comparisons with the format's rank among the formats on the method's units and the position the
    method would take among them (1 = better than every format; ties average)."""
    rows = []
    for method in sorted({c["method"] for c in col.comparisons}):
        mine = sorted((c for c in col.comparisons if c["method"] == method), key=lambda c: c["format"])
        ranks = rank_values({c["format"]: c["format_mean"] for c in mine}, col.higher_is_better)
        best = min(ranks.values()) if ranks else math.nan
        method_mean = next((c["method_mean"] for c in mine if finite(c["method_mean"])), math.nan)
        with_method = rank_values({**{("f", c["format"]): c["format_mean"] for c in mine},
                                   ("m", method): method_mean}, col.higher_is_better)
        for c in mine:
            rows.append({**c, "column": name, "evaluation": col.evaluation,
                         "format_rank": ranks.get(c["format"], math.nan),
                         "is_best_format": ranks.get(c["format"]) == best,
                         "method_position": with_method.get(("m", method), math.nan), "n_formats": len(ranks)})
    return rows


def table6(columns: Mapping[str, Column], formats: list[str], out_path, comparison_path=None,
           columns_path=None) -> list[dict]:
    """Writes each format's rank per column, its average rank and how many columns rank it (``out_path``), the
    comparison methods beside the formats (``comparison_path``) and the columns' legend (``columns_path``).
    ``formats``: the configured prompt formats; a column listing anything else as a format is an error."""
    for name, col in columns.items():
        unknown = sorted(set(col.formats) - set(formats))
        if unknown:
            raise ValueError(f"Table 6 column {name!r} ({col.evaluation or 'unregistered'}) ranks {unknown}, which "
                             f"are not prompt formats ({', '.join(formats)}); report them as comparisons")
    ranked = {name: rank_values(col.formats, col.higher_is_better) for name, col in columns.items()}
    rows = []
    for fmt in sorted({f for col in columns.values() for f in col.formats}):
        row: dict = {"format": fmt}
        got = []
        for name in columns:
            r = ranked[name].get(fmt)
            row[name] = r if r is not None else math.nan
            if r is not None:
                got.append(r)
        row["average_rank"] = float(np.mean(got)) if got else math.nan
        row["n_evaluations"] = len(got)
        rows.append(row)
    rows.sort(key=lambda r: (r["average_rank"] if math.isfinite(r["average_rank"]) else math.inf, r["format"]))
    write_csv(rows, out_path, ["format", *columns, "average_rank", "n_evaluations"])
    if comparison_path is not None:
        write_csv([r for name, col in columns.items() for r in _comparison_rows(name, col)], comparison_path,
                  COMPARISON_COLUMNS)
    if columns_path is not None:
        legend = [{"column": name, "evaluation": col.evaluation, "higher_is_better": col.higher_is_better,
                   "n_formats": len(ranked[name]), "n": "" if col.n is None else col.n,
                   "nan_dropped": "" if col.nan_dropped is None else col.nan_dropped,
                   "comparison_methods": ";".join(sorted({c["method"] for c in col.comparisons})),
                   **{f"chance_{k}": col.chance.get(k, "") for k in CHANCE_KEYS}}
                  for name, col in columns.items()]
        write_csv(legend, columns_path, COLUMNS_COLUMNS)
    return rows


def run_table6(settings: TablesSettings, io: RuleIO) -> dict:
    """results/table6.csv (+ table6_comparison.csv, table6_columns.csv) from the registry's tables."""
    columns = evaluation_columns(io.input["tables"])
    rows = table6(columns, settings.need("formats"), io.output["table"], io.output["comparison"],
                  io.output["columns"])
    return {"formats": len(rows), "columns": len(columns),
            "comparisons": sum(len(c.comparisons) for c in columns.values())}
