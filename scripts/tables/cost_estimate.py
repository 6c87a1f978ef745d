"""Snakemake adapter: results/cost_estimate.csv from the rendered prompts and configured prices."""

from autointerp.tables.cost import explain_rows, prompt_file_items, write_cost_estimate
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    rows = explain_rows(prompt_file_items(snakemake.input.prompts), dict(snakemake.params.explainers))  # noqa: F821
    write_cost_estimate(rows, snakemake.output[0])  # noqa: F821
    log.info("%d rows", len(rows))
