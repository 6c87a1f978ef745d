"""Snakemake adapter: a neuron set's chunk files concatenated into the per-set files the tables read."""

from autointerp.common.snakemake_io import run_gather, run_rule

run_rule(snakemake, None, run_gather)  # noqa: F821
