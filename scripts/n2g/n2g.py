"""Snakemake adapter: fit and score N2G (and the token-lookup baseline) for every neuron of one neuron set."""

from autointerp.common.snakemake_io import run_rule
from autointerp.n2g.stage import N2GSettings, run_n2g

run_rule(snakemake, N2GSettings, run_n2g)  # noqa: F821
