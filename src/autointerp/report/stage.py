"""The report stage's jobs: plots, the neuron pages with their index, and the export (rules/report.smk)."""

from __future__ import annotations

from pathlib import Path

from autointerp.common.io import atomic_dir
from autointerp.common.snakemake_io import RuleIO, as_list, console
from autointerp.report.data import RunData
from autointerp.report.settings import ReportSettings


def run_report_plots(settings: ReportSettings, io: RuleIO) -> dict:
    from autointerp.report.plots import write_plots

    data = RunData.read(io.input, with_simulations=False)
    return write_plots(data, settings, io.input.get("table1"), dict(io.output))


def run_neuron_pages(settings: ReportSettings, io: RuleIO) -> dict:
    from autointerp.report.pages import Report, run_label

    out = Path(io.output["site"])
    data = RunData.read(io.input, max_neurons_per_set=settings.max_pages_per_set)
    tables = [t for t in as_list(io.input.get("tables")) if t.endswith(".csv")]
    with atomic_dir(out) as tmp:  # never half a site: a failed job leaves the previous one, or nothing
        result = Report(data, settings, run_label(out)).write(tmp, as_list(io.input.get("method_graphs")),
                                                              as_list(io.input.get("plots")), tables)
    console(f"{io.rule}: {result['neuron_pages']} neuron pages; open {out / 'index.html'}")
    return result


def run_export(settings: ReportSettings, io: RuleIO) -> dict:
    from autointerp.report.export import write_export

    data = RunData.read(io.input, with_simulations=False)
    rows = write_export(data, settings, {Path(p).stem: p for p in as_list(io.output["parquet"])})
    console(f"{io.rule}: " + ", ".join(f"{s}: {n} rows" for s, n in rows.items()) + f" in {Path(io.outputs[0]).parent}")
    return rows
