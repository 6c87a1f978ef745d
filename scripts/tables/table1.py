"""Snakemake adapter: Table 1 (mean prompt tokens per format) from the rendered prompt files."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.prompt_tokens import run_table1

run_rule(snakemake, None, run_table1)  # noqa: F821
