"""Snakemake adapter: rule neuron_pages (autointerp.report.stage.run_neuron_pages)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.report.settings import ReportSettings
from autointerp.report.stage import run_neuron_pages

run_rule(snakemake, ReportSettings, run_neuron_pages)  # noqa: F821
