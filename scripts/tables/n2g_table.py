"""Snakemake adapter: the N2G paper's metrics (firing precision/recall/F1) per neuron set and method."""

from autointerp.n2g.stage import n2g_table
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    log.info("%d rows", len(n2g_table(list(snakemake.input), snakemake.output[0])))  # noqa: F821
