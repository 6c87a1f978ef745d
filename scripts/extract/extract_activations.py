"""Snakemake adapter: one forward pass over the corpus, one Parquet shard per layer."""

from autointerp.extract.activations import run_extraction_job
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    summary = run_extraction_job(
        model_dir=snakemake.input.model, corpus_path=snakemake.input.corpus,  # noqa: F821
        out_dir=snakemake.output[0], layers=p.layers, hook=p.hook, device=p.device, dtype=p.dtype,  # noqa: F821
        batch_size=p.batch_size, extraction=dict(p.extraction), threads=snakemake.threads,  # noqa: F821
    )
    log.info("extraction summary: %s", summary)
