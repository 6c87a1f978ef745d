"""The detection and fuzzing tables, each figure with its chance floor, and how the scorers relate to simulation.

``table_{kind}.csv`` has Table 2's shape (autointerp.tables.simulation_scores.paired_score_table): the mean
balanced accuracy per format over the neurons finite for every format, with the floors of the same neurons'
example mixes beside each cell. ``table_{kind}_metrics.csv`` gives every metric (accuracy, balanced accuracy,
precision, recall, F1) of every cell with its floors. ``table_scorers.csv`` sets each scorer beside simulation:
the rank correlation of their per-explanation scores and the tokens and requests each spends per explanation.
Columns: docs/tables.md.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from autointerp.classify.core import FLOORS, METRICS, random_mean_interval
from autointerp.common.io import path_fields, read_json, write_csv
from autointerp.common.snakemake_io import RuleIO, as_list, console
from autointerp.tables.settings import Statistics, TablesSettings
from autointerp.tables.simulation_scores import paired_score_table, read_neuron_sets

FIELDS = ["neuron_set", "explainer", "scorer"]
FLOOR_STATS = ("floor_always_yes", "floor_always_no", "floor_random", "floor_random_low", "floor_random_high")
CELL_EXTRA = (*FLOOR_STATS, "n_examples", "unparseable")
METRICS_COLUMNS = ["explainer", "scorer", "neuron_set", "format", "metric", "mean", "n", *FLOOR_STATS,
                   "n_examples", "n_unparseable"]


def _read(path) -> pl.DataFrame:
    cols = ["layer", "neuron", "sample", *METRICS, *(f"{m}_{f}" for m in METRICS for f in FLOORS),
            "n_examples", "n_positive", "n_unparseable"]
    return pl.read_parquet(path, columns=cols)


def classification_table(items: list[dict], out_path, paired_path, metrics_path, *, formats: list[str],
                         statistics: Statistics, neuron_sets: dict | None = None) -> list[dict]:
    """``items``: ``{kind}/{neuron_set}/{explainer}/{scorer}/{format}.parquet`` files as path_fields dicts."""
    frames = {(i["neuron_set"], i["explainer"], i["scorer"], i["format"]): _read(i["path"]) for i in items}
    long_rows = []

    def cell_extra(neuron_set, explainer, scorer, fmt, units):
        df = frames[(neuron_set, explainer, scorer, fmt)]
        keep = pl.DataFrame({"layer": [u[0] for u in units], "neuron": [u[1] for u in units]},
                            schema={"layer": df.schema["layer"], "neuron": df.schema["neuron"]})
        rows = df.join(keep, on=["layer", "neuron"], how="semi")
        # Coin flips on every explanation of the cell's neurons (each with its own mix), averaged as the table
        # averages: a seeded interval for the cell's mean, from the table's bootstrap settings.
        mixes = [(p, n - p) for p, n in rows.select("n_positive", "n_examples").iter_rows()]
        n_examples, n_bad = int(rows["n_examples"].sum() or 0), int(rows["n_unparseable"].sum() or 0)
        per_unit = rows.group_by("layer", "neuron").agg(
            [pl.col(c).filter(pl.col(c).is_finite()).mean() for c in rows.columns
             if c not in ("layer", "neuron", "sample")])
        out = {}
        for metric in METRICS:
            low, high = random_mean_interval(mixes, n_draws=statistics.n_boot, seed=statistics.seed,
                                             level=statistics.confidence_level, metric=metric)
            floors = {"floor_always_yes": _mean(per_unit, f"{metric}_always_yes"),
                      "floor_always_no": _mean(per_unit, f"{metric}_always_no"),
                      "floor_random": _mean(per_unit, f"{metric}_random"),
                      "floor_random_low": low, "floor_random_high": high}
            long_rows.append({"explainer": explainer, "scorer": scorer, "neuron_set": neuron_set, "format": fmt,
                              "metric": metric, "mean": _mean(per_unit, metric),
                              "n": int(per_unit[metric].is_not_null().sum()) if len(per_unit) else 0, **floors,
                              "n_examples": n_examples, "n_unparseable": n_bad})
            if metric == "balanced_accuracy":
                out = {**floors, "n_examples": n_examples,
                       "unparseable": n_bad / n_examples if n_examples else math.nan}
        return out

    rows = paired_score_table(items, [], out_path, paired_path, group="scorer", field="balanced_accuracy",
                              formats=formats, comparisons=[], statistics=statistics, neuron_sets=neuron_sets,
                              extra=cell_extra, extra_stats=CELL_EXTRA)
    long_rows.sort(key=lambda r: (r["explainer"], r["scorer"], r["neuron_set"], r["format"],
                                  METRICS.index(r["metric"])))
    write_csv(long_rows, metrics_path, METRICS_COLUMNS)
    return rows


def _mean(df: pl.DataFrame, column: str) -> float:
    values = df[column].drop_nulls().to_numpy() if len(df) else np.array([])
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def run_classification_table(settings: TablesSettings, io: RuleIO) -> dict:
    """results/table_{kind}.csv, its paired comparisons and every metric with its floors."""
    formats, statistics = settings.need("formats", "statistics")
    rows = classification_table(path_fields(as_list(io.input["scores"]), FIELDS), io.output["table"], io.output["paired"],
                                io.output["metrics"], formats=formats, statistics=statistics,
                                neuron_sets=read_neuron_sets(io.input.get("neuron_sets") or []))
    kind = io.wildcards.get("kind", "")
    for r in rows:
        cells = [f"{k[:-5]} {r[k]:.3f} (chance 0.5; coin flips {r[k[:-5] + '_floor_random_low']:.2f}-"
                 f"{r[k[:-5] + '_floor_random_high']:.2f})" for k in r if k.endswith("_mean")
                 and isinstance(r[k], float) and math.isfinite(r[k])]
        console(f"{kind} {r['explainer']}/{r['scorer']} {r['format']}: " + "; ".join(cells))
    return {"rows": len(rows)}


# --- scorers beside simulation ---------------------------------------------------------------------------------

SCORERS_COLUMNS = ["neuron_set", "explainer", "method", "scorer", "simulator", "n_explanations", "spearman_rho",
                   "spearman_p", "explanations_scored", "requests_per_explanation", "prompt_tokens_per_explanation",
                   "completion_tokens_per_explanation", "tokens_per_explanation"]


def _usage(paths, fields, chunked: bool = False) -> pl.DataFrame:
    """Per (set, explainer, role): explanations scored and the calls and tokens spent (cache hits included:
    what the work needs), summed over the formats' (and chunks': ``{format}/{chunk}.json``) usage files."""
    rows = []
    for f in path_fields(paths, [*fields, "format"] if chunked else fields):
        totals = read_json(f["path"])["totals"]
        rows.append({**{k: f[k] for k in fields}, "explanations": int(totals["explanations"]),
                     "calls": int(totals["calls"]), "prompt_tokens": int(totals["prompt_tokens"]),
                     "completion_tokens": int(totals["completion_tokens"])})
    if not rows:
        return pl.DataFrame(schema={**{k: pl.String for k in fields}, "explanations": pl.Int64, "calls": pl.Int64,
                                    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64})
    return pl.DataFrame(rows).group_by(fields).agg(pl.col("explanations", "calls", "prompt_tokens",
                                                          "completion_tokens").sum())


def _per_explanation(paths, fields, value: str) -> pl.DataFrame:
    frames = [pl.read_parquet(f["path"], columns=["layer", "neuron", "format", "sample", value])
              .rename({value: "value"}).with_columns(*(pl.lit(f[k]).alias(k) for k in fields))
              for f in path_fields(paths, fields)]
    if not frames:
        return pl.DataFrame(schema={"layer": pl.Int32, "neuron": pl.Int32, "format": pl.String, "sample": pl.Int32,
                                    "value": pl.Float64, **{k: pl.String for k in fields}})
    return pl.concat(frames, how="vertical_relaxed")


def scorer_comparison(simulation: list[str], simulation_usage: list[str], scores: dict[str, list[str]],
                      usage: dict[str, list[str]], out_path, *, chunked: bool = False) -> list[dict]:
    """One row per (set, explainer, method): simulation per simulator, each classification kind per scorer and
    simulator it is compared with (Spearman's rho over the explanations both scored, every format pooled)."""
    from scipy.stats import spearmanr

    sim_fields = ["neuron_set", "explainer", "simulator"]
    sims = _per_explanation(simulation, sim_fields, "score")
    sim_usage = _usage(simulation_usage, sim_fields, chunked)
    keys = ["neuron_set", "explainer", "layer", "neuron", "format", "sample"]
    rows = []

    def cost(u: pl.DataFrame, **match) -> dict:
        hit = u.filter(*(pl.col(k) == v for k, v in match.items()))
        n = int(hit["explanations"].sum()) if len(hit) else 0
        per = {c: float(hit[c].sum()) / n if n else math.nan for c in ("calls", "prompt_tokens", "completion_tokens")}
        return {"explanations_scored": n, "requests_per_explanation": per["calls"],
                "prompt_tokens_per_explanation": per["prompt_tokens"],
                "completion_tokens_per_explanation": per["completion_tokens"],
                "tokens_per_explanation": per["prompt_tokens"] + per["completion_tokens"]}

    for (s, e, sim), _ in sorted(sims.group_by(sim_fields), key=lambda g: g[0]):
        rows.append({"neuron_set": s, "explainer": e, "method": "simulation", "scorer": "", "simulator": sim,
                     "n_explanations": "", "spearman_rho": "", "spearman_p": "",
                     **cost(sim_usage, neuron_set=s, explainer=e, simulator=sim)})
    for kind in sorted(scores):
        got = _per_explanation(scores[kind], FIELDS, "balanced_accuracy")
        kind_usage = _usage(usage.get(kind) or [], FIELDS, chunked)
        for (s, e, scorer), part in sorted(got.group_by(FIELDS), key=lambda g: g[0]):
            base = {"neuron_set": s, "explainer": e, "method": kind, "scorer": scorer,
                    **cost(kind_usage, neuron_set=s, explainer=e, scorer=scorer)}
            sim_names = sorted(sims.filter((pl.col("neuron_set") == s) & (pl.col("explainer") == e))["simulator"]
                               .unique()) or [""]
            for sim in sim_names:
                both = part.join(sims.filter(pl.col("simulator") == sim), on=keys, suffix="_sim").filter(
                    pl.col("value").is_finite() & pl.col("value_sim").is_finite())
                rho, p = math.nan, math.nan
                if len(both) >= 3 and both["value"].n_unique() > 1 and both["value_sim"].n_unique() > 1:
                    res = spearmanr(both["value"].to_numpy(), both["value_sim"].to_numpy())
                    rho, p = float(res.statistic), float(res.pvalue)
                rows.append({**base, "simulator": sim, "n_explanations": len(both), "spearman_rho": rho,
                             "spearman_p": p})
    write_csv(rows, out_path, SCORERS_COLUMNS)
    return rows


def run_scorer_comparison(settings: TablesSettings, io: RuleIO) -> dict:
    """results/table_scorers.csv."""
    kinds = [k for k in ("detection", "fuzzing") if k in io.input]
    rows = scorer_comparison(as_list(io.input.get("simulation")), as_list(io.input.get("simulation_usage")),
                             {k: as_list(io.input[k]) for k in kinds},
                             {k: as_list(io.input.get(f"{k}_usage")) for k in kinds}, io.outputs[0],
                             chunked=bool(settings.need("chunked")))
    for r in rows:
        rho = "" if r["method"] == "simulation" else (
            f"; Spearman rho with simulation {r['spearman_rho']:.3f} (n={r['n_explanations']})"
            if isinstance(r["spearman_rho"], float) and math.isfinite(r["spearman_rho"])
            else f"; Spearman rho undefined (n={r['n_explanations']}, a constant score)")
        console(f"{r['neuron_set']}/{r['explainer']} {r['method']} {r['scorer'] or r['simulator']}: "
                f"{r['requests_per_explanation']:.1f} requests, {r['tokens_per_explanation']:.0f} tokens per "
                f"explanation{rho}")
    return {"rows": len(rows)}
