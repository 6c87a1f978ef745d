"""Snakemake adapter: Table 1 (mean prompt tokens per format) from the rendered prompt files."""

from autointerp.tables.cost import prompt_file_items
from autointerp.prompts.stage import table1
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    rows = table1(prompt_file_items(snakemake.input), snakemake.output[0])  # noqa: F821
    log.info("%d rows", len(rows))
