"""Snakemake adapter: Table 2 (mean score per format and neuron set) and paired format comparisons."""

from autointerp.snakemake_io import rule_context
from autointerp.tables import score_file_items, table2

with rule_context(snakemake) as log:  # noqa: F821
    rows = table2(score_file_items(snakemake.input), snakemake.output.table, snakemake.output.paired)  # noqa: F821
    log.info("%d rows", len(rows))
