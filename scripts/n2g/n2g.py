"""Snakemake adapter: fit and score N2G (and the token-lookup baseline) for every neuron of one neuron set."""

from autointerp.n2g.stage import run_n2g_job
from autointerp.common.snakemake_io import rule_context
from autointerp.extract.subject_models import resolve_device

with rule_context(snakemake) as log:  # noqa: F821
    o, p = snakemake.output, snakemake.params  # noqa: F821
    summary = run_n2g_job(
        snakemake.input.records, snakemake.input.model, {"N2G": o.n2g, "TokenLookup": o.lookup},  # noqa: F821
        o.metrics, o.graphs, hook=p.hook, augmentation=p.augmentation, device=resolve_device(p.device),
        threads=snakemake.threads,  # noqa: F821
    )
    log.info("n2g summary: %s", summary)
