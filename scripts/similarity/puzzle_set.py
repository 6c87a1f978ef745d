"""Snakemake adapter: write one configured puzzle set (generated, official or a file) as puzzles.json."""

from autointerp.common.snakemake_io import run_rule
from autointerp.similarity.puzzle_stage import run_puzzle_set
from autointerp.similarity.stage import SimilaritySettings

run_rule(snakemake, SimilaritySettings, run_puzzle_set)  # noqa: F821
