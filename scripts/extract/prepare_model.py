"""Snakemake adapter: prepare the subject model once (dequantise the embedded GGUF, or check a hub name)."""

from autointerp.common.snakemake_io import run_rule
from autointerp.extract.stage import ExtractSettings, run_prepare_model

run_rule(snakemake, ExtractSettings, run_prepare_model)  # noqa: F821
