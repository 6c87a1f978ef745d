"""Snakemake adapter: simulate and score one (neuron set, explainer, simulator, format)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.simulate.stage import SimulateSettings, run_simulate_job

run_rule(snakemake, SimulateSettings, run_simulate_job)  # noqa: F821
