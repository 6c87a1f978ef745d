"""Snakemake adapter: the manifest over the merged layers."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import run_activations_manifest

run_rule(snakemake, None, run_activations_manifest)  # noqa: F821
