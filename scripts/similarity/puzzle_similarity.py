"""Snakemake adapter: embedding similarity of puzzle explanations to each puzzle's ground truth."""

from autointerp.common.snakemake_io import run_rule
from autointerp.similarity.stage import SimilaritySettings, run_puzzle_similarity_job

run_rule(snakemake, SimilaritySettings, run_puzzle_similarity_job)  # noqa: F821
