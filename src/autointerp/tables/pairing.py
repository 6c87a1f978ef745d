"""Paired cells: every mean of one table group is over the same units (neurons or puzzles).

A group is what the paper compares side by side: the prompt formats of one explainer (and simulator) on one
neuron set or puzzle set. Its formats' cells are all taken over the units that are finite for EVERY format of
the group, so the means differ only because the formats differ, never because one format lost other neurons.
A comparison method (N2G, the token lookup) is taken over the units finite for it AND every format, with its own
``n``; ``nan_dropped`` counts the group's units left out of a cell, ``nan_own`` those of them that the row's own
method has no finite value for (NaN, or no row at all: a neuron of the set whose explanation failed counts).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from autointerp.simulate.scoring import mean_sem, paired_comparison
from autointerp.tables.settings import Statistics

Values = Mapping[Hashable, float]

CELL_STATS = ("mean", "sem", "n", "nan_dropped", "nan_own")  # Cell.columns, after a ``{set}_`` prefix
# Columns of a *_paired.csv after its group columns (docs/tables.md).
PAIRED_STATS = ["mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "n_nonzero", "wilcoxon_statistic",
                "wilcoxon_p", "wilcoxon_method", "smallest_attainable_p", "warning"]
PAIRED_COLUMNS = ["kind", "method_a", "method_b", "n", "nan_dropped", *PAIRED_STATS]


def finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def unit_means(rows: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Hashable],
               field: str) -> dict[Hashable, float]:
    """A unit's value: the mean of ``field`` over its rows' (samples') finite values; NaN when none is finite."""
    by: dict[Hashable, list[float]] = {}
    for row in rows:
        values = by.setdefault(key(row), [])
        if finite(row[field]):
            values.append(float(row[field]))
    return {k: float(np.mean(v)) if v else math.nan for k, v in by.items()}


def set_average(row: Mapping[str, Any], sets: Sequence[str]) -> float:
    """Unweighted mean of a wide row's ``{set}_mean`` over the sets where it is finite (NaN if none)."""
    means = [row[f"{s}_mean"] for s in sets if finite(row.get(f"{s}_mean"))]
    return float(np.mean(means)) if means else math.nan


@dataclass(frozen=True)
class Cell:
    units: tuple  # the units the mean is over, in a stable order
    mean: float
    sem: float
    n: int
    nan_dropped: int
    nan_own: int

    def columns(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}mean": self.mean, f"{prefix}sem": self.sem, f"{prefix}n": self.n,
                f"{prefix}nan_dropped": self.nan_dropped, f"{prefix}nan_own": self.nan_own}


def _sorted_units(units) -> tuple:
    return tuple(sorted(units, key=repr))


def _cell(values: Values, units: tuple, all_units: set) -> Cell:
    stats = mean_sem([values[u] for u in units])
    own = sum(1 for u in all_units if not finite(values.get(u)))
    return Cell(units, stats["mean"], stats["sem"], stats["n"], len(all_units) - len(units), own)


def format_units(by_method: Mapping[str, Values], formats: Sequence[str],
                 expected: Iterable[Hashable] = ()) -> tuple[tuple, set]:
    """(units finite for every format, every unit any format has or the group expects). ``expected``: the units
    the group should have (a neuron set's neurons), so that a unit no format has a row for (every explanation
    failed) still counts as missing in ``nan_dropped``/``nan_own`` rather than vanishing."""
    all_units = set(expected).union(*(by_method[f].keys() for f in formats)) if formats else set(expected)
    common = [u for u in all_units if all(finite(by_method[f].get(u)) for f in formats)]
    return _sorted_units(common), all_units


def paired_cells(by_method: Mapping[str, Values], formats: Sequence[str],
                 comparisons: Sequence[str] = (), expected: Iterable[Hashable] = ()) -> dict[str, Cell]:
    """Each method's cell of one group (``by_method``: method -> {unit: value}; ``formats`` and ``comparisons``
    name its keys; ``expected`` as in ``format_units``)."""
    common, all_units = format_units(by_method, formats, expected)
    out = {f: _cell(by_method[f], common, all_units) for f in formats}
    for m in comparisons:
        values = by_method[m]
        units = _sorted_units(u for u in common if finite(values.get(u)))
        out[m] = _cell(values, units, all_units | set(values))
    return out


def paired_rows(by_method: Mapping[str, Values], formats: Sequence[str], comparisons: Sequence[str],
                statistics: Statistics, expected: Iterable[Hashable] = ()) -> list[dict[str, Any]]:
    """Paired comparisons of one group, each on the units of its cells: every pair of formats (``kind`` format)
    over the units finite for all formats, and every comparison method against every format (``kind``
    comparison) over the units finite for it and all formats. ``mean_a``/``mean_b`` are the cells' means."""
    cells = paired_cells(by_method, formats, comparisons, expected)
    pairs = [("format", a, b) for a, b in itertools.combinations(sorted(formats), 2)]
    pairs += [("comparison", m, f) for m in sorted(comparisons) for f in sorted(formats)]
    rows = []
    for kind, a, b in pairs:
        units = cells[a].units
        cmp = paired_comparison([by_method[a][u] for u in units], [by_method[b][u] for u in units],
                                n_boot=statistics.n_boot, seed=statistics.seed,
                                confidence_level=statistics.confidence_level, alpha=statistics.alpha)
        rows.append({"kind": kind, "method_a": a, "method_b": b, "n": cmp["n"],
                     "nan_dropped": cells[a].nan_dropped, **{k: cmp[k] for k in PAIRED_STATS}})
    return rows

