"""Snakemake adapter: Table 1 (mean prompt tokens per format) from the rendered prompt files."""

from autointerp.cost import prompt_file_items
from autointerp.prompt_rendering import table1
from autointerp.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    rows = table1(prompt_file_items(snakemake.input), snakemake.output[0])  # noqa: F821
    log.info("%d rows", len(rows))
