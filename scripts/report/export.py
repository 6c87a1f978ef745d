"""Snakemake adapter: rule export (autointerp.report.stage.run_export)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.report.settings import ReportSettings
from autointerp.report.stage import run_export

run_rule(snakemake, ReportSettings, run_export)  # noqa: F821
