"""Snakemake adapter: one forward pass over the corpus, one Parquet shard per layer."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import ExtractSettings, run_extract_activations

run_rule(snakemake, ExtractSettings, run_extract_activations)  # noqa: F821
