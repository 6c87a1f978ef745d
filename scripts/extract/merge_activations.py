"""Snakemake adapter: every shard's state of a layer group merged into one Parquet file per layer."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import ExtractSettings, run_merge_activations

run_rule(snakemake, ExtractSettings, run_merge_activations)  # noqa: F821
