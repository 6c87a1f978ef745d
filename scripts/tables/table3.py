"""Snakemake adapter: Table 3 (AdaCS: paired similarity to reference explanations per format and neuron set)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.explanation_similarity import run_table3
from autointerp.tables.settings import TablesSettings

run_rule(snakemake, TablesSettings, run_table3)  # noqa: F821
