"""Snakemake adapter: Table 3 (AdaCS: similarity to reference explanations per format and neuron set)."""

from autointerp.similarity.stage import table3
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    log.info("%d rows", len(table3(list(snakemake.input), snakemake.output[0])))  # noqa: F821
