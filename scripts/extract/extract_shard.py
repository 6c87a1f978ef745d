"""Snakemake adapter: one forward pass over a corpus shard, every layer's mergeable state saved."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import ExtractSettings, run_extract_shard

run_rule(snakemake, ExtractSettings, run_extract_shard)  # noqa: F821
