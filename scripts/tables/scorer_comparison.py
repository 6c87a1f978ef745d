"""Snakemake adapter: the classification scorers beside simulation (rank correlation, tokens and requests)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.classification import run_scorer_comparison
from autointerp.tables.settings import TablesSettings

run_rule(snakemake, TablesSettings, run_scorer_comparison)  # noqa: F821
