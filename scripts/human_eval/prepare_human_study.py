"""Snakemake adapter: prepare a blinded rating study (SQLite) from one explainer's explanations of a neuron set."""

from autointerp.human_eval import prepare_study
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    w, p = snakemake.wildcards, snakemake.params  # noqa: F821
    info = prepare_study(
        snakemake.input.records, list(snakemake.input.explanations), snakemake.output[0],  # noqa: F821
        explainer=w.explainer, study_name=f"{w.neuron_set}-{w.explainer}", seed=p.seed, max_items=p.max_items,
        overwrite=True,
    )
    log.info("study: %s", info)
