"""The report's plots, drawn with matplotlib as SVG.

matplotlib rather than a JavaScript chart library: the pages must open from disk with no network (no CDN
script), Snakemake's report embeds SVG files as they are, and with a fixed hash salt and no date the SVG bytes
are the same for the same data (same config, same results). Every panel shows per-neuron values (one dot per
neuron, jittered with a seeded generator) with the mean and its percentile-bootstrap interval, computed as the
tables compute theirs (autointerp.simulate.scoring, the tables' n_boot, seed and confidence level).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.common.io import atomic_path
from autointerp.report.data import NEURON, RunData, score_label
from autointerp.report.settings import ReportSettings
from autointerp.simulate.scoring import bootstrap_mean_ci

# name -> (title, caption); the rule writes {name}.svg for each, the index shows them in this order.
PLOTS = {
    "scores_by_format": ("Scores by format",
                         "one dot per neuron (mean over samples), the mean (black bar) and its bootstrap interval"),
    "paired_differences": ("Paired differences against the baseline format",
                           "each format's per-neuron score minus the baseline format's on the same neuron; the mean "
                           "difference and its bootstrap interval; above 0: better than the baseline"),
    "scores_by_layer": ("Scores by layer", "mean score of each format over the neurons of each layer"),
    "prompt_tokens": ("Prompt tokens by format",
                      "mean explainer prompt tokens per format (Table 1), with the standard error"),
}
PANEL_METRICS = ("simulation", "adacs")  # the headline metric of each per-neuron evaluation


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "autointerp", "svg.fonttype": "none", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None}, bbox_inches="tight")


def _empty(plt, path, message: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    _save(fig, path)
    plt.close(fig)


def _panels(data: RunData) -> list[tuple[str, str, str, pl.DataFrame]]:
    """(metric, scorer, explainer, per-neuron values) for each headline metric, scorer and compared explainer."""
    out = []
    for metric in PANEL_METRICS:
        values = data.neuron_values(metric)
        for (scorer, explainer), part in values.sort("scorer", "explainer").group_by(["scorer", "explainer"],
                                                                                    maintain_order=True):
            out.append((metric, scorer, explainer, part))
    return out


def _grid(plt, n: int, width: float = 5.5, height: float = 3.2):
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def _panel_figure(data: RunData, path, ready: bool = True, why: str = "no per-neuron scores in this run"):
    """(pyplot, figure, one axis per panel, the panels), or None after writing a figure that says ``why``."""
    plt = _pyplot()
    panels = _panels(data)
    if not panels or not ready:
        _empty(plt, path, why)
        return None
    fig, axes = _grid(plt, len(panels))
    return plt, fig, axes, panels


def _finish(plt, fig, path) -> None:
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _dots_with_means(ax, groups: list[tuple[str, np.ndarray]], settings: ReportSettings, rng) -> None:
    stats = settings.statistics
    for x, (label, values) in enumerate(groups):
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        ax.scatter(x + rng.uniform(-0.18, 0.18, len(values)), values, s=10, alpha=0.55, color="#4a78c2",
                   linewidths=0)
        mean = float(values.mean())
        low, high = bootstrap_mean_ci(values, n_boot=stats.n_boot, seed=stats.seed,
                                      confidence_level=stats.confidence_level)
        if math.isfinite(low):
            ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], color="black", capsize=4, lw=1.2)
        ax.plot([x - 0.28, x + 0.28], [mean, mean], color="black", lw=2)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], rotation=20, ha="right")


def scores_by_format(data: RunData, settings: ReportSettings, path) -> None:
    if not (drawn := _panel_figure(data, path)):
        return
    plt, fig, axes, panels = drawn
    rng = np.random.default_rng(settings.statistics.seed)
    for ax, (metric, scorer, explainer, part) in zip(axes, panels):
        groups = [(f, part.filter(pl.col("format") == f)["value"].to_numpy()) for f in settings.formats]
        _dots_with_means(ax, groups, settings, rng)
        ax.set_title(f"{score_label(metric, scorer)}, explainer {explainer}")
        ax.set_ylabel(metric)
    _finish(plt, fig, path)


def paired_differences(data: RunData, settings: ReportSettings, path) -> None:
    base = settings.baseline_format
    others = [f for f in settings.formats if f != base]
    if not (drawn := _panel_figure(data, path, base is not None and bool(others),
                                   "no paired differences: one format or no per-neuron scores")):
        return
    plt, fig, axes, panels = drawn
    rng = np.random.default_rng(settings.statistics.seed)
    for ax, (metric, scorer, explainer, part) in zip(axes, panels):
        wide = part.pivot(on="format", index=NEURON, values="value")
        groups = []
        for f in others:
            if f in wide.columns and base in wide.columns:
                groups.append((f, (wide[f] - wide[base]).fill_null(math.nan).to_numpy()))
            else:
                groups.append((f, np.array([])))
        ax.axhline(0, color="#888", lw=0.8)
        _dots_with_means(ax, groups, settings, rng)
        ax.set_title(f"{score_label(metric, scorer)}: format − {base}, explainer {explainer}")
        ax.set_ylabel(f"difference in {metric}")
    _finish(plt, fig, path)


def scores_by_layer(data: RunData, settings: ReportSettings, path) -> None:
    if not (drawn := _panel_figure(data, path)):
        return
    plt, fig, axes, panels = drawn
    for ax, (metric, scorer, explainer, part) in zip(axes, panels):
        means = (part.filter(pl.col("value").is_finite()).group_by("format", "layer")
                 .agg(pl.col("value").mean()).sort("format", "layer"))
        for f in settings.formats:
            line = means.filter(pl.col("format") == f)
            if line.height:
                ax.plot(line["layer"].to_numpy(), line["value"].to_numpy(), marker="o", ms=3, lw=1, label=f)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"mean {metric}")
        ax.set_title(f"{score_label(metric, scorer)}, explainer {explainer}")
        ax.legend(fontsize=7, frameon=False)
    _finish(plt, fig, path)


def prompt_tokens(table1_path, settings: ReportSettings, path) -> None:
    plt = _pyplot()
    table = pl.read_csv(table1_path) if table1_path else pl.DataFrame()
    if table.height == 0:
        return _empty(plt, path, "no prompt token table in this run")
    groups = table.select("neuron_set", "explainer").unique().sort("neuron_set", "explainer").rows()
    fig, axes = _grid(plt, len(groups), width=5.0, height=3.0)
    for ax, (neuron_set, explainer) in zip(axes, groups):
        part = table.filter((pl.col("neuron_set") == neuron_set) & (pl.col("explainer") == explainer))
        rows = {r["format"]: r for r in part.to_dicts()}
        names = [f for f in settings.formats if f in rows]
        ax.bar(range(len(names)), [rows[f]["mean_prompt_tokens"] for f in names],
               yerr=[rows[f]["sem_prompt_tokens"] or 0 for f in names], color="#4a78c2", capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylabel("prompt tokens")
        ax.set_title(f"set {neuron_set}, explainer {explainer}")
    _finish(plt, fig, path)


def write_plots(data: RunData, settings: ReportSettings, table1_path, outputs: dict[str, str]) -> dict:
    """``outputs``: plot name (PLOTS) -> SVG path."""
    drawers = {"scores_by_format": lambda p: scores_by_format(data, settings, p),
               "paired_differences": lambda p: paired_differences(data, settings, p),
               "scores_by_layer": lambda p: scores_by_layer(data, settings, p),
               "prompt_tokens": lambda p: prompt_tokens(table1_path, settings, p)}
    for name, path in outputs.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        drawers[name](path)
    return {"plots": len(outputs)}
