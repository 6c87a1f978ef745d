"""Snakemake adapter: the blinded study template (SQLite) of one explainer's explanations of a neuron set."""
from autointerp.common.snakemake_io import run_rule
from autointerp.human_eval.stage import HumanEvalSettings, run_prepare_study
run_rule(snakemake, HumanEvalSettings, run_prepare_study)  # noqa: F821
