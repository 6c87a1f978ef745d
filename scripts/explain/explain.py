"""Snakemake adapter: explain every prompt of one (neuron set or puzzle set, explainer, format)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.explain.stage import ExplainSettings, run_explain_job

run_rule(snakemake, ExplainSettings, run_explain_job)  # noqa: F821
