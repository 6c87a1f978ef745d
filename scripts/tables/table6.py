"""Snakemake adapter: Table 6 (each format's rank among the formats per evaluation, average rank), the comparison
methods beside the formats, and the columns' legend, from the evaluation registry's tables."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.ranking import run_table6
from autointerp.tables.settings import TablesSettings

run_rule(snakemake, TablesSettings, run_table6)  # noqa: F821
