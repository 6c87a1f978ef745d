"""The evaluation registry: every evaluation that ranks prompt formats, as Table 6 columns.

An evaluation names the table file it produces (made by its own rule) and turns that table into columns
``{column name: ({format: value}, higher_is_better)}``. Table 6 takes the tables of every enabled evaluation as
input, so registering a new evaluation (and adding its rule) adds its columns with no edit of the Table 6 rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from autointerp.tables.ranking import read_csv


@dataclass(frozen=True)
class Evaluation:
    name: str
    table: str  # the CSV its rule writes
    columns: Callable[[str], dict[str, tuple[dict[str, float], bool]]]
    enabled: Callable[[dict], bool] = lambda config: True
    description: str = ""


EVALUATIONS: dict[str, Evaluation] = {}


def register(evaluation: Evaluation) -> Evaluation:
    if evaluation.name in EVALUATIONS:
        raise ValueError(f"evaluation {evaluation.name!r} is already registered")
    EVALUATIONS[evaluation.name] = evaluation
    return evaluation


def enabled_tables(config: dict) -> list[str]:
    return [e.table for e in EVALUATIONS.values() if e.enabled(config)]


def columns_for(table_path: str) -> dict[str, tuple[dict[str, float], bool]]:
    for e in EVALUATIONS.values():
        if e.table == table_path or str(table_path).endswith("/" + e.table):
            return e.columns(table_path)
    raise KeyError(f"no registered evaluation produces {table_path}")


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _table2_columns(path: str):
    rows = read_csv(path)
    sets = sorted({k[: -len("_mean")] for k in rows[0] if k.endswith("_mean")}) if rows else []
    cols: dict[str, tuple[dict[str, float], bool]] = {}
    for row in rows:
        for s in sets:
            name = f"simulate[{row['explainer']}/{row['simulator']}/{s}]"
            cols.setdefault(name, ({}, True))[0][row["format"]] = _f(row[f"{s}_mean"])
    return cols


register(Evaluation(
    name="simulate_score", table="results/table2.csv", columns=_table2_columns,
    enabled=lambda config: bool(config.get("simulators")),
    description="Mean simulate-and-score correlation per neuron set (Table 2), one column per "
                "explainer/simulator/neuron set.",
))


def _table3_columns(path: str):
    rows = read_csv(path)
    sets = sorted({k[: -len("_mean")] for k in rows[0] if k.endswith("_mean")}) if rows else []
    cols: dict[str, tuple[dict[str, float], bool]] = {}
    for row in rows:
        for s in sets:
            cols.setdefault(f"adacs[{row['explainer']}/{s}]", ({}, True))[0][row["format"]] = _f(row[f"{s}_mean"])
    return cols


def _table4_columns(path: str):
    cols: dict[str, tuple[dict[str, float], bool]] = {}
    for row in read_csv(path):
        cols.setdefault(f"puzzles[{row['explainer']}/{row['puzzle_set']}]", ({}, True))[0][row["format"]] = _f(row["mean"])
    return cols


register(Evaluation(
    name="adacs", table="results/table3.csv", columns=_table3_columns,
    enabled=lambda config: bool((config.get("adacs") or {}).get("references")),
    description="Mean embedding cosine similarity to a reference explanation (Table 3).",
))
register(Evaluation(
    name="puzzles", table="results/table4.csv", columns=_table4_columns,
    enabled=lambda config: bool((config.get("puzzles") or {}).get("sets")),
    description="Mean embedding similarity of puzzle explanations to the ground truth (Table 4).",
))


def _table5_columns(path: str):
    cols: dict[str, tuple[dict[str, float], bool]] = {}
    for row in read_csv(path):
        cols.setdefault(f"human_rating[{row['explainer']}]", ({}, True))[0][row["format"]] = _f(row["mean"])
        cols.setdefault(f"human_best[{row['explainer']}]", ({}, True))[0][row["format"]] = _f(row["pct_best"])
    return cols


register(Evaluation(
    name="human", table="results/table5.csv", columns=_table5_columns,
    enabled=lambda config: bool((config.get("human_eval") or {}).get("ratings")),
    description="Blinded human ratings (Table 5): mean 1-5 rating and % chosen best; absent until ratings exist.",
))
