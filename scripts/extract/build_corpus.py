"""Snakemake adapter: tokenise the configured corpus into fixed-length excerpts (Parquet)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import ExtractSettings, run_build_corpus

run_rule(snakemake, ExtractSettings, run_build_corpus)  # noqa: F821
