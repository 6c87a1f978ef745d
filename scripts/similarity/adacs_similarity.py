"""Snakemake adapter: embedding similarity of one explanation file to its neurons' references (AdaCS)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.similarity.stage import SimilaritySettings, run_adacs_job

run_rule(snakemake, SimilaritySettings, run_adacs_job)  # noqa: F821
