"""Snakemake adapter: rule released_file (autointerp.explain.stage.run_released_file)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.explain.stage import run_released_file

run_rule(snakemake, None, run_released_file)  # noqa: F821
