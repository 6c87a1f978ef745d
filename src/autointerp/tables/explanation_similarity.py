"""Table 3 (AdaCS: similarity of each format's explanations to reference explanations, per neuron set) and
Table 4 (puzzles: similarity of each format's puzzle explanations to the ground truth, per puzzle set).

A unit (neuron or puzzle) scores the mean similarity of its samples; the cells of one explainer's formats are over
the units finite for every format (paired, ``autointerp.tables.pairing``). Each table has a ``*_paired.csv``
companion (the same paired comparisons as Table 2's). Columns: docs/tables.md.
"""

from __future__ import annotations

from collections import defaultdict

from autointerp.common.io import path_fields, read_parquet, write_csv
from autointerp.common.snakemake_io import RuleIO
from autointerp.tables.pairing import (CELL_STATS, PAIRED_COLUMNS, paired_cells, paired_rows, set_average,
                                      unit_means)
from autointerp.tables.settings import TablesSettings


def per_unit(path, key) -> dict:
    """Mean similarity per unit over its finite samples; NaN for a unit none of whose samples has one."""
    return unit_means(read_parquet(path).to_pylist(), key, "similarity")


def _neuron(r):
    return (r["layer"], r["neuron"])


def _puzzle(r):
    return r["puzzle"]


def _groups(items, group_keys, unit_key, settings: TablesSettings) -> dict[tuple, dict[str, dict]]:
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for item in items:
        settings.kind_of(item["format"])  # a name that is neither a format nor a comparison method fails here
        groups[tuple(item[k] for k in group_keys)][item["format"]] = per_unit(item["path"], unit_key)
    return groups


def _split(by_method: dict[str, dict], settings: TablesSettings) -> tuple[list[str], list[str]]:
    formats = sorted(m for m in by_method if settings.kind_of(m) == "format")
    return formats, sorted(m for m in by_method if settings.kind_of(m) == "comparison")


def _cells(by_method: dict[str, dict], settings: TablesSettings, expected=()):
    return paired_cells(by_method, *_split(by_method, settings), expected).items()


def _paired(by_method: dict[str, dict], settings: TablesSettings, expected=(), **group) -> list[dict]:
    return [{**group, **r} for r in paired_rows(by_method, *_split(by_method, settings), settings.need("statistics"),
                                                expected)]


def _kind_order(row) -> bool:
    return row["kind"] != "format"


REFERENCE_FLAGS = ("reference_share", "reference_degenerate")


def reference_flags(items) -> dict[str, dict]:
    """Per neuron set, how degenerate its reference set is (the similarity job measured it; every file of a
    set has the same references): the share of neurons under the most common reference text, and the flag."""
    flags: dict[str, dict] = {}
    for item in items:
        rows = read_parquet(item["path"], columns=list(REFERENCE_FLAGS)).slice(0, 1).to_pylist()
        if rows and item["neuron_set"] not in flags:
            flags[item["neuron_set"]] = rows[0]
    return flags


def table3(paths, out_path, paired_path, settings: TablesSettings, neuron_sets: dict | None = None) -> list[dict]:
    """Per explainer and format, each neuron set's paired mean ± SEM similarity, plus the average over sets.
    Paths: ``.../similarity/{neuron_set}/{explainer}/{format}.parquet``; ``neuron_sets`` as in Table 2."""
    neuron_sets = neuron_sets or {}
    items = path_fields(paths, ["neuron_set", "explainer"])
    groups = _groups(items, ("explainer", "neuron_set"), _neuron, settings)
    sets = sorted({s for _, s in groups})
    flags = reference_flags(items)
    rows: dict[tuple, dict] = {}
    paired = []
    for (explainer, neuron_set), by_method in sorted(groups.items()):
        expected = neuron_sets.get(neuron_set, ())
        paired += _paired(by_method, settings, expected, explainer=explainer, neuron_set=neuron_set)
        for name, cell in _cells(by_method, settings, expected):
            kind = settings.kind_of(name)
            row = rows.setdefault((explainer, name), {"kind": kind, "explainer": explainer, "format": name})
            row.update(cell.columns(f"{neuron_set}_"))
            row.update({f"{neuron_set}_{k}": v for k, v in flags.get(neuron_set, {}).items()})
    for row in rows.values():
        row["average"] = set_average(row, sets)
    out = sorted(rows.values(), key=lambda r: (r["explainer"], _kind_order(r), r["format"]))
    write_csv(out, out_path, ["kind", "explainer", "format"]
              + [f"{s}_{k}" for s in sets for k in (*CELL_STATS, *REFERENCE_FLAGS)] + ["average"])
    write_csv(paired, paired_path, ["explainer", "neuron_set", *PAIRED_COLUMNS])
    return out


def table4(paths, out_path, paired_path, settings: TablesSettings) -> list[dict]:
    """Per puzzle set, explainer and format: paired mean ± SEM similarity to the ground truth (a puzzle's samples
    are averaged first). Paths: ``.../puzzles/{puzzle_set}/similarity/{explainer}/{format}.parquet``."""
    items = path_fields(paths, ["puzzle_set", "similarity", "explainer"])
    rows, paired = [], []
    for (puzzle_set, explainer), by_method in sorted(_groups(items, ("puzzle_set", "explainer"), _puzzle,
                                                             settings).items()):
        paired += _paired(by_method, settings, puzzle_set=puzzle_set, explainer=explainer)
        for name, cell in _cells(by_method, settings):
            rows.append({"kind": settings.kind_of(name), "puzzle_set": puzzle_set, "explainer": explainer,
                         "format": name, **cell.columns()})
    rows.sort(key=lambda r: (r["puzzle_set"], r["explainer"], _kind_order(r), r["format"]))
    write_csv(rows, out_path, ["kind", "puzzle_set", "explainer", "format", *CELL_STATS])
    write_csv(paired, paired_path, ["puzzle_set", "explainer", *PAIRED_COLUMNS])
    return rows


def run_table3(settings: TablesSettings, io: RuleIO) -> dict:
    """results/table3.csv and results/table3_paired.csv from the compared explainers' AdaCS similarity files."""
    from autointerp.tables.simulation_scores import read_neuron_sets

    return {"rows": len(table3(io.input["similarity"], io.output["table"], io.output["paired"], settings,
                               read_neuron_sets(io.input.get("neuron_sets") or [])))}


def run_table4(settings: TablesSettings, io: RuleIO) -> dict:
    """results/table4.csv and results/table4_paired.csv from the puzzle similarity files."""
    return {"rows": len(table4(io.inputs, io.output["table"], io.output["paired"], settings))}
