"""Static HTML pages of a finished run: one per neuron of each set, and an index with the tables, the neuron list
and the plots. They open from disk (no server), and link only to files inside the report folder, so the folder
(or ``snakemake --report``'s zip) can be shared as it is.

Rendered with Jinja2 and autoescaping on: tokens, explanations and N2G text are untrusted, and a template cannot
forget to escape one of them. Each page allows only its own inline style and script (CSP hashes).
"""

from __future__ import annotations

import base64
import hashlib
import math
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import polars as pl
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from autointerp.common.shading import LEVELS, STRONG_LEVEL, shade_level, visible_token
from autointerp.report.data import RunData, score_label

TEMPLATES = Path(__file__).parent / "templates"
TABLE_TITLES = {
    "table1": ("Table 1: prompt tokens", "Mean explainer prompt tokens per format (the explainer's encoding)."),
    "table2": ("Table 2: simulation scores", "Mean correlation score per format; comparison methods beside."),
    "table2_paired": ("Table 2: paired comparisons", "Differences with bootstrap intervals and Wilcoxon tests."),
    "table3": ("Table 3: AdaCS", "Mean cosine similarity of explanations to the reference explanations."),
    "table3_paired": ("Table 3: paired comparisons", "Differences with bootstrap intervals and Wilcoxon tests."),
    "table4": ("Table 4: Neuron Puzzles", "Mean similarity of puzzle explanations to the ground truth."),
    "table4_paired": ("Table 4: paired comparisons", "Differences with bootstrap intervals and Wilcoxon tests."),
    "table5": ("Table 5: human ratings", "Mean rating and share chosen best per format."),
    "table6": ("Table 6: format ranks", "Rank of each format in every evaluation column (1 = best)."),
    "table6_comparison": ("Table 6: comparison methods", "Methods against each format on the same units."),
    "table6_columns": ("Table 6: columns", "What each Table 6 column is."),
    "table_n2g": ("N2G metrics", "N2G and the token lookup: correlation and firing precision/recall/F1."),
    "cost_estimate": ("Cost estimate", "Tokens and US dollars per stage, role and format, before any paid call."),
    "table_imported": ("Imported explanations", "What each imported file covers and what can be computed from it."),
    "table_paper": ("Against the paper", "This run's Table 3/4 values and ranks beside the paper's reported ones."),
}


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    env.globals.update(zip=zip, css=Markup(css), js=Markup(js), css_hash=_csp_hash(css), js_hash=_csp_hash(js))
    return env


def fmt(value, digits: int = 3) -> str:
    """A number for a page: ``—`` for missing or NaN (never a blank that looks like zero)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def neuron_file(layer: int, neuron: int) -> str:
    return f"layer{layer:03d}_neuron{neuron:05d}.html"


def token_cells(tokens: Sequence[str], values: Sequence[float | None], scale_max: float, what: str) -> list[dict]:
    """Shaded tokens: ``values`` on a scale whose top is ``scale_max`` (the neuron's maximum, or the simulator's 10)."""
    cells = []
    for token, value in zip(tokens, values):
        missing = value is None or not math.isfinite(value)
        level = 0 if missing else shade_level(value, scale_max)
        shown = "—" if missing else f"{value:.2f}"
        cells.append({"text": visible_token(token), "level": level, "strong": level >= STRONG_LEVEL,
                      "missing": missing, "value": shown,
                      "title": f"{what}: no value" if missing else f"{what} {shown}"})
    return cells


def _rows(df: pl.DataFrame) -> list[dict]:
    return df.to_dicts()


def _by_neuron(frame: pl.DataFrame) -> dict[tuple, pl.DataFrame]:
    if frame.height == 0:
        return {}
    return frame.partition_by(["neuron_set", "layer", "neuron"], as_dict=True, maintain_order=True)


class Report:
    """Renders the pages of one run from its RunData."""

    def __init__(self, data: RunData, settings, run: str):
        self.data, self.settings, self.run = data, settings, run
        self.env = environment()
        self.labels = self._score_labels()

    def _score_labels(self) -> list[tuple[str, str]]:
        """(metric, scorer) pairs of the run, in registry order of the metrics."""
        pairs = self.data.scores.select("metric", "scorer").unique().rows()
        order = {m: i for i, m in enumerate(["simulation", "simulation_top", "simulation_random", "adacs"])}
        return sorted(pairs, key=lambda p: (order.get(p[0], len(order)), p[0], p[1]))

    def primary(self) -> tuple[str, str, str] | None:
        """The score that picks a neuron's best format: simulation (else the first metric) of the first compared
        explainer and scorer, as Table 6's first column."""
        if not self.labels or not self.settings.explainer_models:
            return None
        metric, scorer = self.labels[0]
        return metric, scorer, sorted(self.settings.explainer_models)[0]

    # --- neuron pages ------------------------------------------------------------------------------------------

    def write(self, out_dir: Path, graph_dirs: Iterable[str] = (), plots: Iterable[str] = (),
              tables: Iterable[str] = ()) -> dict:
        out_dir = Path(out_dir)
        graphs = {Path(g).parent.name: Path(g) for g in graph_dirs}  # n2g/{set}/graphs
        stats = {(r["layer"], r["neuron"]): r for r in _rows(self.data.stats)}
        # each frame split by neuron once (a filter per page would rescan it for every page)
        d = self.data
        self.parts = {name: _by_neuron(frame) for name, frame in (
            ("records", d.records), ("explanations", d.explanations), ("scores", d.scores),
            ("methods", d.methods), ("simulations", d.simulations))}
        pages = 0
        for (neuron_set,), members in self.data.neurons.sort("order").group_by(["neuron_set"], maintain_order=True):
            ids = list(zip(members["layer"].to_list(), members["neuron"].to_list()))
            folder = out_dir / neuron_set
            folder.mkdir(parents=True, exist_ok=True)
            for i, (layer, neuron) in enumerate(ids):
                html = self.neuron_page(neuron_set, layer, neuron, stats.get((layer, neuron), {}), ids, i,
                                        graphs.get(neuron_set), folder, self.data.set_sizes.get(neuron_set, len(ids)))
                (folder / neuron_file(layer, neuron)).write_text(html, encoding="utf-8")
                pages += 1
        plot_entries = self._copy_plots(out_dir, plots)
        (out_dir / "index.html").write_text(self.index_page(plot_entries, tables), encoding="utf-8")
        return {"neuron_pages": pages, "plots": len(plot_entries)}

    def _part(self, name: str, key: tuple) -> pl.DataFrame:
        frame = getattr(self.data, name)
        return self.parts[name].get(key, frame.clear())

    def neuron_page(self, neuron_set, layer, neuron, stat: dict, ids, i, graph_dir, folder: Path,
                    set_size: int) -> str:
        d = self.data
        key = (neuron_set, layer, neuron)
        records = self._part("records", key).sort("split", "position")
        max_act = float(stat.get("max_activation") or (records["max_activation"][0] if records.height else 0.0))
        first = records.row(0, named=True) if records.height else {}
        quantiles = list(zip(d.quantile_levels, stat.get("quantiles") or []))
        variance = stat.get("variance")
        page_stats = {"max": fmt(max_act), "quantiles": [(lvl, fmt(v)) for lvl, v in quantiles],
                      "mean": fmt(stat.get("mean"), 4),
                      "std": fmt(math.sqrt(variance) if variance is not None and variance >= 0 else None, 4),
                      "cutoff": fmt(first.get("cutoff")) if first.get("cutoff") is not None else "",
                      "cutoff_quantile": first.get("cutoff_quantile")}

        explanations = self._part("explanations", key).sort("explainer", "format", "sample")
        scores = self._part("scores", key)
        header = ["explainer", "format", "sample", "explanation", *[score_label(m, s) for m, s in self.labels]]
        value_of = {(r["explainer"], r["format"], r["sample"], r["metric"], r["scorer"]): r["value"]
                    for r in _rows(scores)}
        rows = []
        for e in _rows(explanations):
            k = (e["explainer"], e["format"], e["sample"])
            rows.append([e["explainer"], e["format"], e["sample"], e["explanation"],
                         *[fmt(value_of.get((*k, m, s))) for m, s in self.labels]])
        explanation_table = {"id": "explanations", "header": header, "rows": rows, "numeric": header[4:]}

        methods = self._part("methods", key).sort("method")
        method_header = ["method", "text", "score", "score_top", "score_random", "firing_precision",
                         "firing_recall", "firing_f1"]
        method_table = {"id": "methods", "header": method_header, "numeric": method_header[2:],
                        "rows": [[m["method"], m["explanation"] or "", *[fmt(m[c]) for c in method_header[2:]]]
                                 for m in _rows(methods)]} if methods.height else None
        graphs = []
        if graph_dir is not None:
            svg = graph_dir / f"layer{layer:03d}_neuron{neuron:05d}.svg"
            txt = svg.with_suffix(".txt")
            if svg.exists():
                (folder / "graphs").mkdir(exist_ok=True)
                shutil.copyfile(svg, folder / "graphs" / svg.name)
                graphs.append({"src": f"graphs/{svg.name}",
                               "caption": txt.read_text(encoding="utf-8").strip() if txt.exists() else svg.name})

        sims = self._part("simulations", key)
        sim_options, sim_rows = [], {}
        for (explainer, simulator, fmt_name, sample), part in sims.sort(
                "explainer", "simulator", "format", "sample", "record", "position").group_by(
                ["explainer", "simulator", "format", "sample"], maintain_order=True):
            sim_key = f"{explainer}/{simulator}/{fmt_name}/{sample}"
            score = value_of.get((explainer, fmt_name, sample, "simulation", simulator))
            label = f"{fmt_name} (explainer {explainer}, simulator {simulator}, sample {sample})"
            sim_options.append((sim_key, label))
            for (record,), r in part.group_by(["record"], maintain_order=True):
                values = [None if v is None or not math.isfinite(v) else v for v in r["expected_value"].to_list()]
                sim_rows.setdefault(record, []).append({"key": sim_key, "label": label, "score": fmt(score),
                                                        "positions": r["position"].to_list(), "values": values})
        valid, train = [], []
        for rec in _rows(records.filter(pl.col("split") == "valid")):
            index = rec["position"]
            tokens = rec["tokens"]
            row_sims = []
            for s in sim_rows.get(index, []):
                by_pos = dict(zip(s["positions"], s["values"]))
                row_sims.append({"key": s["key"], "label": s["label"], "score": s["score"],
                                 "tokens": token_cells(tokens, [by_pos.get(p) for p in range(len(tokens))],
                                                       float(LEVELS), "simulated")})
            valid.append({"label": f"{rec['source']} #{rec['source_rank']} (excerpt {rec['excerpt_id']})",
                          "tokens": token_cells(tokens, rec["activations"], max_act, "activation"),
                          "sims": row_sims})
        for rec in _rows(records.filter(pl.col("split") == "train")):
            train.append({"label": f"{rec['source']} #{rec['source_rank']} (excerpt {rec['excerpt_id']})",
                          "tokens": token_cells(rec["tokens"], rec["activations"], max_act, "activation")})

        def link(j):
            return (neuron_file(*ids[j]), f"layer {ids[j][0]} neuron {ids[j][1]}") if 0 <= j < len(ids) else ("", "")

        (prev_href, prev_label), (next_href, next_label) = link(i - 1), link(i + 1)
        legend = "; ".join(f"{score_label(m, s)}: {self._meaning(m)}" for m, s in self.labels) or "none."
        return self.env.get_template("neuron.html.j2").render(
            run=self.run, neuron_set=neuron_set, layer=layer, neuron=neuron, subject_model=self.settings.subject_model,
            stats=page_stats, explanations=explanation_table, score_legend=legend, methods=method_table,
            graphs=graphs, sim_options=sim_options, valid_records=valid, train_records=train,
            prev_href=prev_href, prev_label=prev_label, next_href=next_href, next_label=next_label,
            position=i + 1, total=set_size)

    @staticmethod
    def _meaning(metric: str) -> str:
        from autointerp.tables.evaluations import EVALUATIONS

        for e in EVALUATIONS.values():
            if e.neuron_scores and metric in e.neuron_scores.metrics:
                return e.neuron_scores.metrics[metric]
        return metric

    # --- index -------------------------------------------------------------------------------------------------

    def neuron_list(self) -> tuple[list[str], list[dict], str]:
        """Rows of the index's neuron list, its header and the legend saying which score ranks the formats."""
        formats = self.settings.formats
        header = ["set", "layer", "neuron", "max activation", "best format", "best score", *formats]
        primary = self.primary()
        values = {}
        if primary:
            metric, scorer, explainer = primary
            per = self.data.neuron_values(metric).filter((pl.col("scorer") == scorer) &
                                                         (pl.col("explainer") == explainer))
            values = {(r["neuron_set"], r["layer"], r["neuron"], r["format"]): r["value"] for r in _rows(per)}
            legend = (f"Per-format values: {score_label(metric, scorer)} of explainer {explainer} (mean over "
                      f"samples); best format: the highest of them.")
        else:
            legend = "No per-neuron score in this run."
        shown = dict(self.data.neurons.group_by("neuron_set").len().iter_rows())
        cut = [f"{shown.get(name, 0)} of {size} neurons of set {name}" for name, size in sorted(self.data.set_sizes.items())
               if shown.get(name, 0) < size]
        if cut:
            legend += (" Pages (and this list) cover " + ", ".join(cut) + ", the first in the set's order "
                       "(config report.max_pages_per_set); the export and the plots have every neuron.")
        peak = {(r["layer"], r["neuron"]): r["max_activation"] for r in _rows(self.data.stats)}
        rows = []
        for n in _rows(self.data.neurons.sort("neuron_set", "order")):
            k = (n["neuron_set"], n["layer"], n["neuron"])
            vals = [values.get((*k, f)) for f in formats]
            finite = [(v, f) for v, f in zip(vals, formats) if v is not None and math.isfinite(v)]
            best_value, best = max(finite) if finite else (None, "")
            rows.append({**n, "href": f"{n['neuron_set']}/{neuron_file(n['layer'], n['neuron'])}",
                         "max": fmt(peak.get((n["layer"], n["neuron"]))), "best": best,
                         "best_score": fmt(best_value), "best_value": "" if best_value is None else best_value,
                         "cells": [{"text": fmt(v), "raw": "" if v is None or not math.isfinite(v) else v}
                                    for v in vals]})
        return header, rows, legend

    def _copy_plots(self, out_dir: Path, plots: Iterable[str]) -> list[dict]:
        from autointerp.report.plots import PLOTS

        entries = []
        for p in plots:
            p = Path(p)
            (out_dir / "plots").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out_dir / "plots" / p.name)
            title, caption = PLOTS.get(p.stem, (p.stem, ""))
            entries.append({"src": f"plots/{p.name}", "title": title, "caption": caption})
        return entries

    def index_page(self, plots: list[dict], tables: Iterable[str]) -> str:
        header, rows, legend = self.neuron_list()
        table_ctx = []
        for path in tables:
            path = Path(path)
            df = pl.read_csv(path, infer_schema=False)
            title, caption = TABLE_TITLES.get(path.stem, (path.stem, ""))
            table_ctx.append({"id": f"table-{path.stem}", "title": title, "caption": caption, "file": path.name,
                              "header": df.columns, "numeric": [],
                              "rows": [[_short(v) for v in row] for row in df.iter_rows()]})
        s = self.settings
        return self.env.get_template("index.html.j2").render(
            run=self.run, subject_model=s.subject_model,
            explainers=", ".join(f"{k} ({v})" for k, v in sorted(s.explainer_models.items())),
            simulators=", ".join(f"{k} ({v})" for k, v in sorted(s.simulator_models.items())),
            embedder=s.embedder_model, formats=s.formats, neuron_header=header, neuron_numeric=header[5:] + header[1:4],
            neurons=rows, list_legend=legend, plots=plots, tables=table_ctx)


def _short(value) -> str:
    """A CSV cell for a page: numbers to 4 significant digits, text as it is."""
    if value is None:
        return ""
    try:
        number = float(value)
    except ValueError:
        return value
    if value.strip().lstrip("-").isdigit():
        return value
    return f"{number:.4g}"


def run_label(report_dir) -> str:
    """The run a report folder belongs to: results/report -> default, results/<run>/report -> <run>."""
    parent = Path(report_dir).parent
    return "default" if parent.name == "results" or parent == Path(".") else parent.name

