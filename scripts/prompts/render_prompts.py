"""Snakemake adapter: render one format's explainer prompts for one neuron set and explainer."""

from autointerp.prompts.stage import render_neuron_prompts
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    p, w = snakemake.params, snakemake.wildcards  # noqa: F821
    n = render_neuron_prompts(
        snakemake.input.records, w.format, dict(p.spec), snakemake.output[0],  # noqa: F821
        encoding=p.encoding, context_length=p.context_length,
        max_completion_tokens=p.max_completion_tokens, mutate_like_seed=p.mutate_like_seed,
    )
    log.info("%d prompts in format %s", n, w.format)
