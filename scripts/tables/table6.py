"""Snakemake adapter: Table 6 (rank of each format per evaluation, average rank) from the registry's tables."""

from autointerp.tables.evaluations import columns_for
from autointerp.common.snakemake_io import rule_context
from autointerp.tables.ranking import table6

with rule_context(snakemake) as log:  # noqa: F821
    columns = {}
    for path in snakemake.input.tables:  # noqa: F821
        columns.update(columns_for(path))
    rows = table6(columns, snakemake.output[0])  # noqa: F821
    log.info("%d formats ranked over %d columns", len(rows), len(columns))
