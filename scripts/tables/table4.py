"""Snakemake adapter: Table 4 (puzzle explanations' similarity to the ground truth per format)."""

from autointerp.similarity.stage import table4
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    log.info("%d rows", len(table4(list(snakemake.input), snakemake.output[0])))  # noqa: F821
