"""Snakemake adapter: Table 4 (puzzle explanations' paired similarity to the ground truth per format)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.explanation_similarity import run_table4
from autointerp.tables.settings import TablesSettings

run_rule(snakemake, TablesSettings, run_table4)  # noqa: F821
