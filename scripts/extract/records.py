"""Snakemake adapter: train/valid records and highlight cutoffs for one neuron set."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import ExtractSettings, run_records

run_rule(snakemake, ExtractSettings, run_records)  # noqa: F821
