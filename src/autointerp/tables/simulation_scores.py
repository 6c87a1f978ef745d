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
from typing import Callable

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


def neuron_scores(path, field: str = "score") -> dict[tuple[int, int], float]:
    """Per-neuron value of ``field``: the mean over its samples' finite values (NaN if no sample has one)."""
    rows = read_parquet(path, columns=["layer", "neuron", field]).to_pylist()
    return unit_means(rows, lambda r: (r["layer"], r["neuron"]), field)


# A group's extra columns for one cell: (neuron_set, explainer, group, format name, the cell's units) -> columns
CellExtra = Callable[[str, str, str, str, tuple], dict]


def paired_score_table(items: list[dict], methods: list[dict], out_path, paired_path, *, group: str, field: str,
                       formats: list[str], comparisons: list[str], statistics: Statistics,
                       neuron_sets: dict | None = None, extra: CellExtra | None = None,
                       extra_stats: tuple[str, ...] = ()) -> list[dict]:
    """A Table-2-shaped table of per-explanation files: rows (explainer, ``group`` role, format), a cell per
    neuron set over the neurons finite for every format (paired). ``items``: ``{"neuron_set", "explainer",
    group, "format", "path"}``; ``methods``: comparison methods' files ``{"neuron_set", "format", "path"}``
    (``format`` is the method's name). ``extra`` adds columns ``{set}_{name}`` (``extra_stats``) to each cell."""
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
        groups[(item["explainer"], item[group], item["neuron_set"])][item["format"]] = neuron_scores(item["path"],
                                                                                                      field)
    sets = sorted({k[2] for k in groups})
    rows: dict[tuple, dict] = {}
    paired = []
    for (explainer, role, neuron_set), by_format in sorted(groups.items()):
        fmts = sorted(by_format)
        comps = sorted(m for (s, m) in method_scores if s == neuron_set)
        by_method = {**by_format, **{m: method_scores[(neuron_set, m)] for m in comps}}
        expected = neuron_sets.get(neuron_set, ())
        for name, cell in paired_cells(by_method, fmts, comps, expected).items():
            kind = "format" if name in by_format else "comparison"
            row = rows.setdefault((explainer, role, kind, name), {
                "kind": kind, "explainer": explainer, group: role, "format": name})
            row.update(cell.columns(f"{neuron_set}_"))
            if extra is not None:
                row.update({f"{neuron_set}_{k}": v for k, v in extra(neuron_set, explainer, role, name,
                                                                        cell.units).items()})
        for r in paired_rows(by_method, fmts, comps, statistics, expected):
            paired.append({"explainer": explainer, group: role, "neuron_set": neuron_set, **r})
    for row in rows.values():
        row["average"] = set_average(row, sets)
    columns = ["kind", "explainer", group, "format"] + [f"{s}_{k}" for s in sets for k in (*CELL_STATS, *extra_stats)]
    out = sorted(rows.values(), key=lambda r: (r["explainer"], r[group], r["kind"] != "format", r["format"]))
    write_csv(out, out_path, columns + ["average"])
    write_csv(paired, paired_path, ["explainer", group, "neuron_set", *PAIRED_COLUMNS])
    return out


def table2(items: list[dict], methods: list[dict], out_path, paired_path, *, formats: list[str],
           comparisons: list[str], statistics: Statistics, neuron_sets: dict | None = None) -> list[dict]:
    """Table 2: simulation scores (``score``) per explainer/simulator; N2G and the token lookup as comparisons.
    ``neuron_sets``: each set's neurons, so that neurons without any score count as missing (``nan_own``)."""
    return paired_score_table(items, methods, out_path, paired_path, group="simulator", field="score",
                              formats=formats, comparisons=comparisons, statistics=statistics,
                              neuron_sets=neuron_sets)


def run_table2(settings: TablesSettings, io: RuleIO) -> dict:
    """results/table2.csv and results/table2_paired.csv from the score files and the comparison methods'."""
    formats, comparisons, statistics = settings.need("formats", "comparison_methods", "statistics")
    methods = path_fields(io.input.get("methods") or [], ["neuron_set"])
    rows = table2(score_file_items(io.input["scores"]), methods, io.output["table"], io.output["paired"],
                  formats=formats, comparisons=comparisons, statistics=statistics,
                  neuron_sets=read_neuron_sets(io.input.get("neuron_sets") or []))
    return {"rows": len(rows), "comparison_rows": sum(r["kind"] == "comparison" for r in rows)}
