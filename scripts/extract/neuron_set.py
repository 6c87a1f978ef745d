"""Snakemake adapter: choose one neuron set from the activation shards."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import ExtractSettings, run_neuron_set

run_rule(snakemake, ExtractSettings, run_neuron_set)  # noqa: F821
