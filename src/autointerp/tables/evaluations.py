"""The evaluation registry: every evaluation that ranks prompt formats, as Table 6 columns.

An evaluation names the table file its own rule produces (plus companion files its column function also reads,
e.g. the paired comparisons) and turns that table into columns ``{column name: Column}``. A ``Column`` keeps the
prompt formats (ranked by Table 6) apart from comparison methods (N2G, the token lookup, ...: never ranked,
reported beside the formats on the same units in results/table6_comparison.csv). Table 6 takes the tables of every
enabled evaluation as input, so registering a new evaluation (and adding its rule) adds its columns with no edit
of the Table 6 rule or code.

An evaluation with per-neuron files also says how to read them (``NeuronScores``): the neuron pages and the export
(autointerp.report) show every registered evaluation's per-neuron scores the same way; rules/common.smk's
NEURON_SCORE_FILES names each evaluation's files.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Column:
    """One Table 6 column.

    ``formats``: prompt format -> value (ranked, 1 = best); every value should be over the same units (paired).
    ``n``/``nan_dropped``: units behind each format's value and units left out (None when the evaluation does not
    know). ``comparisons``: one mapping per (comparison method, format) on the units finite for the method and every
    format, with keys ``method, format, n, nan_dropped, method_mean, format_mean, diff`` (method − format),
    ``ci_low, ci_high, wilcoxon_p, wilcoxon_method, warning`` (NaN/"" when unknown)."""

    formats: Mapping[str, float]
    higher_is_better: bool = True
    n: int | None = None
    nan_dropped: int | None = None
    comparisons: tuple[Mapping[str, Any], ...] = ()
    evaluation: str = ""  # filled in by the registry
    # What answering without reading scores on the column's units (classification scorers): keys always_yes,
    # always_no, random, random_low, random_high (the coin flips' interval for the mean). Empty: no floor.
    chance: Mapping[str, float] = dataclasses.field(default_factory=dict)


# The long form of per-neuron scores: one row per (explanation, metric). ``scorer`` is the simulator (or other
# model) that produced the value, "" when the metric has one scorer per run.
NEURON_SCORE_KEYS = ("neuron_set", "layer", "neuron", "explainer", "format", "sample")
NEURON_SCORE_COLUMNS = (*NEURON_SCORE_KEYS, "metric", "scorer", "value")


@dataclass(frozen=True)
class NeuronScores:
    """How to read an evaluation's per-neuron files: ``fields`` names the folders above the file, whose stem is
    the format (e.g. neuron_set, explainer, simulator); ``read(path, fields)`` returns NEURON_SCORE_COLUMNS rows."""

    fields: tuple[str, ...]
    read: Callable[[str, dict[str, str]], "pl.DataFrame"]
    metrics: Mapping[str, str] = dataclasses.field(default_factory=dict)  # metric -> meaning (docs, export)


@dataclass(frozen=True)
class Evaluation:
    name: str
    table: str  # the CSV its rule writes, relative to the run's results folder (e.g. table2.csv)
    columns: Callable[[str], dict[str, Column]]
    enabled: Callable[[dict], bool] = lambda config: True
    description: str = ""
    companions: tuple[str, ...] = ()  # other files of the same rule that ``columns`` reads (Table 6's inputs too)
    neuron_scores: NeuronScores | None = None  # per-neuron files (neuron pages, export); None: table only


def read_neuron_scores(files: Mapping[str, list[str]]) -> "pl.DataFrame":
    """Every evaluation's per-neuron scores, long (NEURON_SCORE_COLUMNS), from ``{evaluation: [files]}``."""
    import polars as pl

    from autointerp.common.io import path_fields

    frames = []
    for name, paths in files.items():
        spec = EVALUATIONS[name].neuron_scores
        if spec is None:
            raise ValueError(f"evaluation {name!r} registers no per-neuron scores")
        frames += [spec.read(f["path"], f).select(NEURON_SCORE_COLUMNS) for f in path_fields(paths, list(spec.fields))]
    if not frames:
        return pl.DataFrame(schema={"neuron_set": pl.String, "layer": pl.Int32, "neuron": pl.Int32,
                                    "explainer": pl.String, "format": pl.String, "sample": pl.Int32,
                                    "metric": pl.String, "scorer": pl.String, "value": pl.Float64})
    return pl.concat(frames, how="vertical_relaxed")


EVALUATIONS: dict[str, Evaluation] = {}


def register(evaluation: Evaluation) -> Evaluation:
    if evaluation.name in EVALUATIONS:
        raise ValueError(f"evaluation {evaluation.name!r} is already registered")
    EVALUATIONS[evaluation.name] = evaluation
    return evaluation


def enabled_tables(config: dict, results_dir: str = "results") -> list[str]:
    """Every file Table 6 reads for this config: each enabled evaluation's table and companions, in the run's
    results folder (registered names are relative to it)."""
    return [f"{results_dir}/{name}" for e in EVALUATIONS.values() if e.enabled(config)
            for name in (e.table, *e.companions)]


def _is(path, registered: str) -> bool:
    return str(path) == registered or str(path).endswith("/" + registered)


def columns_for(table_path: str) -> dict[str, Column]:
    """The columns of the registered evaluation whose table is ``table_path``."""
    for e in EVALUATIONS.values():
        if _is(table_path, e.table):
            return {name: dataclasses.replace(col, evaluation=e.name) for name, col in e.columns(table_path).items()}
    raise KeyError(f"no registered evaluation produces {table_path}")


def evaluation_columns(paths) -> dict[str, Column]:
    """Columns of every evaluation table among ``paths`` (Table 6's inputs); companion files are skipped."""
    columns: dict[str, Column] = {}
    for path in paths:
        if any(_is(path, c) for e in EVALUATIONS.values() for c in e.companions):
            continue
        for name, col in columns_for(path).items():
            if name in columns:
                raise ValueError(f"Table 6 column {name!r} comes from two evaluations")
            columns[name] = col
    return columns


# --- helpers for column functions ----------------------------------------------------------------------------


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _i(x) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def paired_path(table_path) -> Path:
    """``results/tableN_paired.csv`` beside ``results/tableN.csv``."""
    p = Path(table_path)
    return p.with_name(f"{p.stem}_paired{p.suffix}")


def comparisons_from_paired(rows: list[dict], **match: str) -> tuple[dict[str, Any], ...]:
    """Comparison rows (kind comparison) of a ``*_paired.csv`` restricted to one group, as Column.comparisons."""
    out = []
    for r in rows:
        if r["kind"] != "comparison" or any(r[k] != v for k, v in match.items()):
            continue
        out.append({"method": r["method_a"], "format": r["method_b"], "n": _i(r["n"]),
                    "nan_dropped": _i(r["nan_dropped"]), "method_mean": _f(r["mean_a"]),
                    "format_mean": _f(r["mean_b"]), "diff": _f(r["mean_diff"]), "ci_low": _f(r["ci_low"]),
                    "ci_high": _f(r["ci_high"]), "wilcoxon_p": _f(r["wilcoxon_p"]),
                    "wilcoxon_method": r["wilcoxon_method"], "warning": r["warning"]})
    return tuple(out)


def _paired_columns(path: str, group_keys: tuple[str, ...], name: Callable[..., str],
                    set_key: str | None = None) -> dict[str, Column]:
    """Columns of a paired table (Tables 2-4): one per group and set; format rows ranked, comparisons beside.
    ``set_key`` None: the sets are column groups ``{set}_mean`` of a wide table (Tables 2, 3)."""
    rows = read_csv(path)
    paired = read_csv(paired_path(path))
    groups: dict[tuple, dict] = {}
    for row in rows:
        if set_key is None:
            sets = [k[: -len("_mean")] for k in row if k.endswith("_mean")]
            cells = [(s, f"{s}_") for s in sets]
        else:
            cells = [(row[set_key], "")]
        for s, prefix in cells:
            g = groups.setdefault((*(row[k] for k in group_keys), s), {"formats": {}, "n": None, "nan": None})
            if row["kind"] == "format" and row.get(f"{prefix}mean", "") != "":
                g["formats"][row["format"]] = _f(row[f"{prefix}mean"])
                g["n"], g["nan"] = _i(row[f"{prefix}n"]), _i(row[f"{prefix}nan_dropped"])
    out = {}
    for key, g in sorted(groups.items()):
        *group, s = key
        match = dict(zip(group_keys, group), **{set_key or "neuron_set": s})
        out[name(*group, s)] = Column(g["formats"], True, g["n"], g["nan"], comparisons_from_paired(paired, **match))
    return out


# --- the evaluations -----------------------------------------------------------------------------------------


def _long_scores(path: str, fields: dict[str, str], metrics: Mapping[str, str], scorer: str) -> "pl.DataFrame":
    """``metrics`` (file column -> metric name) of a per-explanation Parquet file, long, with the path's fields."""
    import polars as pl

    df = pl.read_parquet(path, columns=["layer", "neuron", "sample", *metrics])
    return (df.rename(dict(metrics))
            .unpivot(index=["layer", "neuron", "sample"], on=list(metrics.values()), variable_name="metric")
            .with_columns(pl.lit(fields["neuron_set"]).alias("neuron_set"),
                          pl.lit(fields["explainer"]).alias("explainer"), pl.lit(fields["format"]).alias("format"),
                          pl.lit(scorer).alias("scorer"), pl.col("value").cast(pl.Float64)))


SIMULATION_METRICS = {"score": "simulation", "score_top": "simulation_top", "score_random": "simulation_random"}


register(Evaluation(
    name="simulate_score", table="table2.csv", companions=("table2_paired.csv",),
    columns=lambda path: _paired_columns(path, ("explainer", "simulator"), lambda e, sim, s: f"simulate[{e}/{sim}/{s}]"),
    enabled=lambda config: bool(config.get("simulators")),
    description="Mean simulate-and-score correlation per neuron set (Table 2), one column per "
                "explainer/simulator/neuron set; N2G and the token lookup as comparisons.",
    neuron_scores=NeuronScores(
        fields=("neuron_set", "explainer", "simulator"),
        read=lambda path, f: _long_scores(path, f, SIMULATION_METRICS, f["simulator"]),
        metrics={"simulation": "Pearson correlation of the true activations and the simulator's expected values "
                               "over the tokens of the 10 held-out records pooled (scores file `score`; -1..1)",
                 "simulation_top": "the same over the 5 top records' tokens (`score_top`; -1..1)",
                 "simulation_random": "the same over the 5 random records' tokens (`score_random`; -1..1)"}),
))
register(Evaluation(
    name="adacs", table="table3.csv", companions=("table3_paired.csv",),
    columns=lambda path: _paired_columns(path, ("explainer",), lambda e, s: f"adacs[{e}/{s}]"),
    enabled=lambda config: bool((config.get("adacs") or {}).get("references")),
    description="Mean embedding cosine similarity to a reference explanation (Table 3).",
    neuron_scores=NeuronScores(
        fields=("neuron_set", "explainer"),
        read=lambda path, f: _long_scores(path, f, {"similarity": "adacs"}, ""),
        metrics={"adacs": "cosine similarity of the explanation's and the reference explanation's embeddings "
                          "(similarity file `similarity`; -1..1; NaN without a reference)"}),
))
register(Evaluation(
    name="puzzles", table="table4.csv", companions=("table4_paired.csv",),
    columns=lambda path: _paired_columns(path, ("explainer",), lambda e, s: f"puzzles[{e}/{s}]",
                                         set_key="puzzle_set"),
    enabled=lambda config: bool((config.get("puzzles") or {}).get("sets")),
    description="Mean embedding similarity of puzzle explanations to the ground truth (Table 4).",
))


CLASSIFY_KINDS = ("detection", "fuzzing")


def _classification_columns(path: str, kind: str) -> dict[str, Column]:
    """Table 2-like columns of balanced accuracy, each with its chance floor (the same for every format of a
    column: the formats are scored on the same neurons' example mixes)."""
    columns = _paired_columns(path, ("explainer", "scorer"), lambda e, sc, s: f"{kind}[{e}/{sc}/{s}]")
    rows = [r for r in read_csv(path) if r["kind"] == "format"]
    out = {}
    for name, col in columns.items():
        explainer, scorer, neuron_set = name[len(kind) + 1:-1].split("/")
        row = next((r for r in rows if (r["explainer"], r["scorer"]) == (explainer, scorer)
                    and r.get(f"{neuron_set}_mean", "") != ""), None)
        chance = {} if row is None else {  # no neuron finite for every format: no value, no floor
            k: _f(row[f"{neuron_set}_floor_{k}"]) for k in ("always_yes", "always_no", "random", "random_low",
                                                             "random_high")}
        out[name] = dataclasses.replace(col, chance=chance)
    return out


def _scorer_runs(kind: str) -> Callable[[dict], bool]:
    return lambda config: any(kind in (s.get("kinds") or CLASSIFY_KINDS) for s in (config.get("scorers") or {}).values())


def _classification_metrics(kind: str) -> dict[str, str]:
    """The per-neuron values the pages and the export show: each figure with its floor beside it."""
    return {
        kind: "balanced accuracy (mean of recall and specificity) of the scorer's yes/no answers on the neuron's "
              f"held-out examples ({kind} file `balanced_accuracy`; 0..1; always-yes and always-no score 0.5)",
        f"{kind}_chance_low": "lower end of the central 95% interval of coin-flip answers' balanced accuracy on "
                              "the same example mix (`balanced_accuracy_random_low`)",
        f"{kind}_chance_high": "upper end of that interval (`balanced_accuracy_random_high`): a score at or below "
                               "it is within chance",
        f"{kind}_accuracy": "share of examples answered correctly (`accuracy`)",
        f"{kind}_accuracy_always_yes": "accuracy of answering yes to every example (`accuracy_always_yes`)",
        f"{kind}_accuracy_always_no": "accuracy of answering no to every example (`accuracy_always_no`)",
        f"{kind}_f1": "F1 of the yes answers (`f1`)",
        f"{kind}_f1_always_yes": "F1 of answering yes to every example (`f1_always_yes`)",
        f"{kind}_unparseable": "examples whose answer could not be parsed, counted as wrong (`n_unparseable`)",
    }


_CLASSIFY_FILE_COLUMNS = {"": "balanced_accuracy", "_chance_low": "balanced_accuracy_random_low",
                          "_chance_high": "balanced_accuracy_random_high", "_accuracy": "accuracy",
                          "_accuracy_always_yes": "accuracy_always_yes", "_accuracy_always_no": "accuracy_always_no",
                          "_f1": "f1", "_f1_always_yes": "f1_always_yes", "_unparseable": "n_unparseable"}

for _kind in CLASSIFY_KINDS:
    register(Evaluation(
        name=_kind, table=f"table_{_kind}.csv", companions=(f"table_{_kind}_paired.csv", f"table_{_kind}_metrics.csv"),
        columns=lambda path, kind=_kind: _classification_columns(path, kind),
        enabled=_scorer_runs(_kind),
        description=f"Mean balanced accuracy of the {_kind} scorer per neuron set (docs/classify.md), one column "
                    "per explainer/scorer/neuron set, with its chance floor.",
        neuron_scores=NeuronScores(
            fields=("neuron_set", "explainer", "scorer"),
            read=lambda path, f, kind=_kind: _long_scores(
                path, f, {col: kind + suffix for suffix, col in _CLASSIFY_FILE_COLUMNS.items()}, f["scorer"]),
            metrics=_classification_metrics(_kind)),
    ))


def _table5_columns(path: str) -> dict[str, Column]:
    by: dict[str, list[dict]] = {}
    for row in read_csv(path):
        by.setdefault(row["explainer"], []).append(row)
    cols = {}
    for explainer, rows in sorted(by.items()):
        counts = {_i(r["n_ratings"]) for r in rows}
        n = counts.pop() if len(counts) == 1 else None  # every item rates every format: the same n
        cols[f"human_rating[{explainer}]"] = Column({r["format"]: _f(r["mean"]) for r in rows}, True, n)
        cols[f"human_best[{explainer}]"] = Column({r["format"]: _f(r["pct_best"]) for r in rows}, True, n)
    return cols


register(Evaluation(
    name="human", table="table5.csv", columns=_table5_columns,
    enabled=lambda config: bool((config.get("human_eval") or {}).get("ratings")),
    description="Blinded human ratings (Table 5): mean 1-5 rating and % chosen best; absent until ratings exist.",
))
