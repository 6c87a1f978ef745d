"""Snakemake adapter: rule paper_comparison (autointerp.tables.imported)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.imported import run_paper_comparison

run_rule(snakemake, None, run_paper_comparison)  # noqa: F821
