"""Snakemake adapter: Table 5 (mean rating ± SEM, % chosen best) from rated study databases or exports."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.human import run_table5

run_rule(snakemake, None, run_table5)  # noqa: F821
