"""Snakemake adapter: Table 2 (paired mean score per format and neuron set, comparison methods apart) and its
paired comparisons."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.settings import TablesSettings
from autointerp.tables.simulation_scores import run_table2

run_rule(snakemake, TablesSettings, run_table2)  # noqa: F821
