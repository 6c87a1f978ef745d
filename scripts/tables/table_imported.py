"""Snakemake adapter: rule table_imported (autointerp.tables.imported)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.imported import run_table_imported

run_rule(snakemake, None, run_table_imported)  # noqa: F821
