"""Tables of imported explanations: what each imported file covers and what can be computed from it
(``table_imported.csv``), and a run's format rankings next to the values a paper reports (``table_paper.csv``).

Coverage is reported, never filled in: a neuron set without reference explanations in the released files gets no
AdaCS, and the table says so rather than inventing a reference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from autointerp.common.io import InputFileError, path_fields, write_csv
from autointerp.common.snakemake_io import RuleIO, as_list, console

COVERAGE_COLUMNS = ["explainer", "model", "set_kind", "set", "format", "file", "rows", "explained", "missing",
                    "not_in_set", "empty_cells", "multiline_cells", "with_reference", "evaluations", "note"]
PAPER_COLUMNS = ["kind", "table", "explainer", "set", "format", "value", "rank", "paper_value", "paper_rank",
                 "n_formats", "kendall_tau", "kendall_p", "best", "paper_best", "best_agrees", "worst",
                 "paper_worst", "worst_agrees", "note"]
REPORTED_COLUMNS = ["table", "explainer", "set", "format", "value"]


def coverage_rows(usage_paths, similarity_paths, adacs_sets: list[str], simulated: bool) -> list[dict]:
    """One row per imported (explainer, set, format): the file's counts, how many of its neurons have a
    reference explanation (a finite AdaCS) and which evaluations use it."""
    with_reference = {}
    for item in path_fields(similarity_paths, ["neuron_set", "explainer"]):
        df = pl.read_parquet(item["path"], columns=["layer", "neuron", "similarity"])
        with_reference[(item["explainer"], item["neuron_set"], item["format"])] = df.filter(
            pl.col("similarity").is_not_nan()).select("layer", "neuron").unique().height
    rows = []
    for path in usage_paths:
        parts = Path(path).parts
        puzzle = "puzzles" in parts
        item = path_fields([path], ["explainer"] if puzzle else ["neuron_set", "explainer"])[0]
        set_name = parts[parts.index("puzzles") + 1] if puzzle else item["neuron_set"]
        totals = json.loads(Path(path).read_text(encoding="utf-8"))["totals"]
        key = (item["explainer"], set_name, item["format"])
        if puzzle:
            evaluations, reference, note = "puzzles", totals["explained"], "ground truth of every puzzle"
        elif set_name in adacs_sets:
            evaluations, reference = "adacs" + (", simulation" if simulated else ""), with_reference.get(key, 0)
            note = "" if reference == totals["explained"] else (
                f"{totals['explained'] - reference} explained neurons have no reference explanation")
        else:
            evaluations = "simulation" if simulated else ""
            reference = None
            note = ("no reference explanations for this set in the files (AdaCS not computable)"
                    + ("" if simulated else "; simulation needs the subject's activations and a simulator"))
        rows.append({"explainer": item["explainer"], "model": totals["model"], "set_kind": "puzzle_set" if puzzle
                     else "neuron_set", "set": set_name, "format": item["format"], "file": Path(totals["file"]).name,
                     "rows": totals["rows"], "explained": totals["explained"], "missing": totals["missing"],
                     "not_in_set": totals["not_in_set"], "empty_cells": totals["empty_cells"],
                     "multiline_cells": totals["multiline_cells"],
                     "with_reference": "" if reference is None else reference, "evaluations": evaluations,
                     "note": note})
    return sorted(rows, key=lambda r: (r["set_kind"], r["set"], r["explainer"], r["format"]))


def run_table_imported(settings: None, io: RuleIO) -> dict:
    """Rule table_imported: results/<run>/table_imported.csv."""
    similarity, usage = as_list(io.input.get("similarity")), as_list(io.input["usage"])
    adacs_sets = sorted({f["neuron_set"] for f in path_fields(similarity, ["neuron_set", "explainer"])})
    rows = coverage_rows(usage, similarity, adacs_sets, bool(io.input.get("scores")))
    write_csv(rows, io.outputs[0], COVERAGE_COLUMNS)
    seen = set()
    for r in rows:
        if (r["explainer"], r["set"]) in seen:
            continue
        seen.add((r["explainer"], r["set"]))
        ref = f", {r['with_reference']} with a reference" if r["with_reference"] != "" else ""
        console(f"imported {r['explainer']} {r['set_kind'].replace('_', ' ')} {r['set']}: {r['explained']} explained "
                f"({r['missing']} missing, {r['not_in_set']} outside the set){ref}; "
                f"{r['evaluations'] or 'nothing computable'}" + (f" ({r['note']})" if r["note"] else ""))
    return {"rows": len(rows)}


# --- the paper's reported values ------------------------------------------------------------------------------


def _ranks(values: dict[str, float]) -> dict[str, float]:
    """1 = highest; ties share their average rank (scipy.stats.rankdata)."""
    from scipy.stats import rankdata

    names = [k for k, v in values.items() if v is not None and math.isfinite(v)]
    ranks = rankdata([-values[k] for k in names], method="average")
    return dict(zip(names, (float(r) for r in ranks)))


def run_values(table3, table4) -> dict[tuple[str, str, str], dict[str, float]]:
    """{(table, explainer, set): {format: mean}} of this run's Tables 3 and 4 (format rows only)."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    if table3:
        df = pl.read_csv(table3, infer_schema_length=0).filter(pl.col("kind") == "format")
        sets = [c[: -len("_mean")] for c in df.columns if c.endswith("_mean")]
        for row in df.iter_rows(named=True):
            for s in sets:
                if row[f"{s}_mean"] not in (None, ""):
                    out.setdefault(("3", row["explainer"], s), {})[row["format"]] = float(row[f"{s}_mean"])
    if table4:
        df = pl.read_csv(table4, infer_schema_length=0).filter(pl.col("kind") == "format")
        for row in df.iter_rows(named=True):
            out.setdefault(("4", row["explainer"], row["puzzle_set"]), {})[row["format"]] = float(row["mean"])
    return out


def read_reported(path) -> dict[tuple[str, str, str], dict[str, float]]:
    """{(table, explainer, set): {format: value}} from a CSV with REPORTED_COLUMNS (no rows: nothing reported)."""
    if not path:
        return {}
    df = pl.read_csv(path, infer_schema_length=0)
    missing = [c for c in REPORTED_COLUMNS if c not in df.columns]
    if missing:
        raise InputFileError(f"{path}: needs columns {REPORTED_COLUMNS}, lacks {missing}")
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for lineno, row in enumerate(df.iter_rows(named=True), 2):
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            raise InputFileError(f"{path}:{lineno}: value {row['value']!r} is not a number") from None
        out.setdefault((str(row["table"]), row["explainer"], row["set"]), {})[row["format"]] = value
    return out


def agreement(ours: dict[str, float], paper: dict[str, float]) -> dict:
    """Kendall's tau between the two rankings of the formats both have, and whether the best and the worst
    format agree."""
    from scipy.stats import kendalltau

    common = sorted(f for f in ours if f in paper and math.isfinite(ours[f]) and math.isfinite(paper[f]))
    out = {"n_formats": len(common), "kendall_tau": math.nan, "kendall_p": math.nan, "best": "", "paper_best": "",
           "best_agrees": "", "worst": "", "paper_worst": "", "worst_agrees": "", "note": ""}
    if len(common) < 2:
        out["note"] = "fewer than 2 formats with a reported value: no rank agreement"
        return out
    tau = kendalltau([ours[f] for f in common], [paper[f] for f in common])
    best, pbest = max(common, key=ours.get), max(common, key=paper.get)
    worst, pworst = min(common, key=ours.get), min(common, key=paper.get)
    out.update(kendall_tau=float(tau.statistic), kendall_p=float(tau.pvalue), best=best, paper_best=pbest,
               best_agrees=best == pbest, worst=worst, paper_worst=pworst, worst_agrees=worst == pworst)
    return out


def paper_rows(ours: dict, paper: dict) -> list[dict]:
    rows = []
    for key in sorted(set(ours) | set(paper)):
        table, explainer, set_name = key
        mine, theirs = ours.get(key, {}), paper.get(key, {})
        my_rank, their_rank = _ranks(mine), _ranks(theirs)
        for f in sorted(set(mine) | set(theirs)):
            rows.append({"kind": "value", "table": table, "explainer": explainer, "set": set_name, "format": f,
                         "value": mine.get(f, math.nan), "rank": my_rank.get(f, math.nan),
                         "paper_value": theirs.get(f, math.nan), "paper_rank": their_rank.get(f, math.nan)})
        rows.append({"kind": "agreement", "table": table, "explainer": explainer, "set": set_name,
                     **agreement(mine, theirs)})
    return rows


def run_paper_comparison(settings: None, io: RuleIO) -> dict:
    """Rule paper_comparison: results/<run>/table_paper.csv, and the comparison on the console."""
    ours = run_values(io.input.get("table3"), io.input.get("table4"))
    reported_path = io.input.get("reported") or None
    paper = read_reported(reported_path)
    rows = paper_rows(ours, paper)
    write_csv(rows, io.outputs[0], PAPER_COLUMNS)
    if not paper:
        console(f"paper_comparison: no reported values in {reported_path or '(paper_reported not set)'}: the table "
                "lists this run's values and ranks only; add the paper's Table 3 and 4 values there "
                "(columns table,explainer,set,format,value) to compare")
    for r in rows:
        if r["kind"] == "agreement" and r["n_formats"]:
            console(f"Table {r['table']} {r['explainer']}/{r['set']}: Kendall tau {r['kendall_tau']:.2f} over "
                    f"{r['n_formats']} formats; best {r['best']} (paper {r['paper_best']}), worst {r['worst']} "
                    f"(paper {r['paper_worst']})")
    for key in sorted(ours):
        values = ", ".join(f"{f} {v:.4f}" for f, v in sorted(ours[key].items(), key=lambda kv: -kv[1]))
        console(f"Table {key[0]} {key[1]}/{key[2]}: {values}")
    return {"rows": len(rows), "reported": sum(len(v) for v in paper.values())}
