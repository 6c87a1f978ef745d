"""Snakemake adapter: simulate and score one (neuron set, explainer, simulator, format)."""

from autointerp.simulate.stage import run_simulate_job
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    summary = run_simulate_job(
        i.explanations, i.records, o.scores, o.predictions, o.usage, role=dict(p.role), cache_dir=p.cache_dir,
        engine_dir=i.engine[0] if i.engine else None, threads=snakemake.threads,  # noqa: F821
    )
    log.info("simulate summary: %s", summary)
