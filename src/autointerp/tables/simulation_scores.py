"""Table 2 (simulate-and-score per format, explainer/simulator and neuron set) and its paired comparisons.

Rows of ``kind`` format are the prompt formats of one explainer/simulator; each neuron set's cell is the mean over
the neurons finite for every format of that group (paired, ``autointerp.tables.pairing``). Rows of ``kind``
comparison are methods that need no explainer or simulator (N2G, the token lookup); they join every
explainer/simulator group, each over the neurons finite for it and all the group's formats. Columns:
docs/tables.md.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from autointerp.common.io import path_fields, read_parquet, write_csv
from autointerp.common.snakemake_io import RuleIO
from autointerp.tables.pairing import (CELL_STATS, PAIRED_COLUMNS, paired_cells, paired_rows, set_average,
                                      unit_means)
from autointerp.tables.settings import Statistics, TablesSettings


def score_file_items(paths) -> list[dict]:
    """Parse ``.../scores/{neuron_set}/{explainer}/{simulator}/{format}.parquet``."""
    return path_fields(paths, ["neuron_set", "explainer", "simulator"])


def read_neuron_sets(paths) -> dict[str, set[tuple[int, int]]]:
    """{set name: its (layer, neuron) ids} from ``.../neuron_sets/{name}.csv`` files."""
    import polars as pl

    return {Path(p).stem: {(int(r[0]), int(r[1])) for r in pl.read_csv(p, columns=["layer", "neuron"]).iter_rows()}
            for p in paths}


def neuron_scores(path) -> dict[tuple[int, int], float]:
    """Per-neuron score: the mean over its samples' finite scores (NaN if no sample has one)."""
    rows = read_parquet(path, columns=["layer", "neuron", "score"]).to_pylist()
    return unit_means(rows, lambda r: (r["layer"], r["neuron"]), "score")


def table2(items: list[dict], methods: list[dict], out_path, paired_path, *, formats: list[str],
           comparisons: list[str], statistics: Statistics, neuron_sets: dict | None = None) -> list[dict]:
    """``items``: format score files ``{"neuron_set", "explainer", "simulator", "format", "path"}``;
    ``methods``: comparison methods' score files ``{"neuron_set", "format", "path"}`` (``format`` is the
    method's name). Every ``format`` must be in ``formats`` and every method in ``comparisons``.
    ``neuron_sets``: each set's neurons, so that neurons without any score count as missing (``nan_own``)."""
    neuron_sets = neuron_sets or {}
    for item in items:
        if item["format"] not in formats:
            raise ValueError(f"{item['path']}: {item['format']!r} is not a configured prompt format")
    for m in methods:
        if m["format"] not in comparisons:
            raise ValueError(f"{m['path']}: {m['format']!r} is not a comparison method ({', '.join(comparisons)})")
    method_scores = {(m["neuron_set"], m["format"]): neuron_scores(m["path"]) for m in methods}
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for item in items:
        groups[(item["explainer"], item["simulator"], item["neuron_set"])][item["format"]] = neuron_scores(item["path"])
    sets = sorted({k[2] for k in groups})
    rows: dict[tuple, dict] = {}
    paired = []
    for (explainer, simulator, neuron_set), by_format in sorted(groups.items()):
        fmts = sorted(by_format)
        comps = sorted(m for (s, m) in method_scores if s == neuron_set)
        by_method = {**by_format, **{m: method_scores[(neuron_set, m)] for m in comps}}
        expected = neuron_sets.get(neuron_set, ())
        for name, cell in paired_cells(by_method, fmts, comps, expected).items():
            kind = "format" if name in by_format else "comparison"
            row = rows.setdefault((explainer, simulator, kind, name), {
                "kind": kind, "explainer": explainer, "simulator": simulator, "format": name})
            row.update(cell.columns(f"{neuron_set}_"))
        for r in paired_rows(by_method, fmts, comps, statistics, expected):
            paired.append({"explainer": explainer, "simulator": simulator, "neuron_set": neuron_set, **r})
    for row in rows.values():
        row["average"] = set_average(row, sets)
    columns = ["kind", "explainer", "simulator", "format"] + [f"{s}_{k}" for s in sets for k in CELL_STATS]
    out = sorted(rows.values(), key=lambda r: (r["explainer"], r["simulator"], r["kind"] != "format", r["format"]))
    write_csv(out, out_path, columns + ["average"])
    write_csv(paired, paired_path, ["explainer", "simulator", "neuron_set", *PAIRED_COLUMNS])
    return out


def run_table2(settings: TablesSettings, io: RuleIO) -> dict:
    """results/table2.csv and results/table2_paired.csv from the score files and the comparison methods'."""
    formats, comparisons, statistics = settings.need("formats", "comparison_methods", "statistics")
    methods = path_fields(io.input.get("methods") or [], ["neuron_set"])
    rows = table2(score_file_items(io.input["scores"]), methods, io.output["table"], io.output["paired"],
                  formats=formats, comparisons=comparisons, statistics=statistics,
                  neuron_sets=read_neuron_sets(io.input.get("neuron_sets") or []))
    return {"rows": len(rows), "comparison_rows": sum(r["kind"] == "comparison" for r in rows)}
