"""Snakemake adapter: render one format's explainer prompts for one neuron set and explainer."""

from autointerp.common.snakemake_io import run_rule
from autointerp.prompts.stage import PromptSettings, run_render_prompts

run_rule(snakemake, PromptSettings, run_render_prompts)  # noqa: F821
