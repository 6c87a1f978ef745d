"""Snakemake adapter: Table 5 (mean rating ± SEM, % chosen best) from rated study databases or exports."""

from autointerp.human_eval import table5
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    rows = table5(list(snakemake.input), snakemake.output[0])  # noqa: F821
    log.info("%d rows", len(rows))
