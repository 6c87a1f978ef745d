"""Snakemake adapter: explainer prompts of one format for every puzzle of a set (cutoff 1)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.prompts.stage import PromptSettings
from autointerp.similarity.puzzle_stage import run_render_puzzle_prompts

run_rule(snakemake, PromptSettings, run_render_puzzle_prompts)  # noqa: F821
