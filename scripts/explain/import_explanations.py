"""Snakemake adapter: rules import_explanations / import_puzzle_explanations (autointerp.explain.stage)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.explain.stage import ExplainSettings, run_import_explanations

run_rule(snakemake, ExplainSettings, run_import_explanations)  # noqa: F821
