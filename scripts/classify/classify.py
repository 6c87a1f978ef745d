"""Snakemake adapter: detection or fuzzing scores of one (neuron set, explainer, scorer, kind, format)."""

from autointerp.classify.stage import ClassifySettings, run_classify_job
from autointerp.common.snakemake_io import run_rule

run_rule(snakemake, ClassifySettings, run_classify_job)  # noqa: F821
