"""Snakemake adapter: explain every neuron of one (neuron set, explainer, format) prompt file."""

from autointerp.explain.stage import ExplainSettings, run_explain_job
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    p, o = snakemake.params, snakemake.output  # noqa: F821
    role = dict(p.role)
    settings = ExplainSettings(
        temperature=role.get("temperature", 1.0), top_p=role.get("top_p", 1.0), max_tokens=role.get("max_tokens", 60),
        samples=getattr(p, "samples", None) or role.get("samples", 1),  # puzzles: puzzles.samples seed=role.get("seed"), max_extra_samples=p.max_extra_samples,
        max_invalid_fraction=p.max_invalid_fraction,
    )
    engine = snakemake.input.engine[0] if snakemake.input.engine else None  # noqa: F821
    summary = run_explain_job(
        snakemake.input.prompts, o.explanations, o.failures, o.usage, role=role, settings=settings,  # noqa: F821
        cache_dir=p.cache_dir, engine_dir=engine, threads=snakemake.threads,  # noqa: F821
    )
    log.info("explain summary: %s", summary)
