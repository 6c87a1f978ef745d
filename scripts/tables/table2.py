"""Snakemake adapter: Table 2 (mean score per format and neuron set) and paired format comparisons."""

from autointerp.common.io import path_fields
from autointerp.common.snakemake_io import rule_context
from autointerp.tables.ranking import score_file_items, table2

with rule_context(snakemake) as log:  # noqa: F821
    i, o = snakemake.input, snakemake.output  # noqa: F821
    rows = table2(score_file_items(i.scores), o.table, o.paired, methods=path_fields(i.methods, ["neuron_set"]))
    log.info("%d rows", len(rows))
