"""Snakemake adapter: rule report_plots (autointerp.report.stage.run_report_plots)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.report.settings import ReportSettings
from autointerp.report.stage import run_report_plots

run_rule(snakemake, ReportSettings, run_report_plots)  # noqa: F821
