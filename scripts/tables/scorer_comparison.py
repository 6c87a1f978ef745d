"""Snakemake adapter: the classification scorers beside simulation (rank correlation, tokens and requests)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.classification import run_scorer_comparison

run_rule(snakemake, None, run_scorer_comparison)  # noqa: F821
