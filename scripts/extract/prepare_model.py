"""Snakemake adapter: prepare the subject model once (dequantise the embedded GGUF, or check a hub name)."""

from autointerp.common.snakemake_io import rule_context
from autointerp.extract.subject_models import prepare_model

with rule_context(snakemake) as log:  # noqa: F821 (snakemake is injected)
    info = prepare_model(snakemake.params.model, snakemake.output[0])  # noqa: F821
    log.info("prepared %s: %s", snakemake.params.model, info)  # noqa: F821
