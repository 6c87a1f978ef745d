"""Snakemake adapter: explainer prompts of one format for every puzzle of a set (cutoff 1, all sentences)."""

from autointerp.similarity.puzzle_stage import render_puzzle_prompts
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    p, w = snakemake.params, snakemake.wildcards  # noqa: F821
    n = render_puzzle_prompts(snakemake.input[0], w.format, dict(p.spec), snakemake.output[0],  # noqa: F821
                              encoding=p.encoding, context_length=p.context_length,
                              max_completion_tokens=p.max_completion_tokens)
    log.info("%d puzzle prompts", n)
