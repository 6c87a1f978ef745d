"""Snakemake adapter: the N2G paper's metrics (firing precision/recall/F1) per neuron set and method."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.n2g_metrics import run_n2g_table

run_rule(snakemake, None, run_n2g_table)  # noqa: F821
