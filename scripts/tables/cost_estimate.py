"""Snakemake adapter: results/cost_estimate.csv (predicted tokens and dollars of the configured run)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.cost import run_cost_estimate
from autointerp.tables.settings import TablesSettings

run_rule(snakemake, TablesSettings, run_cost_estimate)  # noqa: F821
