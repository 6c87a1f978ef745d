"""Snakemake adapter: the detection or fuzzing table (balanced accuracy per format with chance floors), its paired
comparisons and every metric with its floors."""

from autointerp.common.snakemake_io import run_rule
from autointerp.tables.classification import run_classification_table
from autointerp.tables.settings import TablesSettings

run_rule(snakemake, TablesSettings, run_classification_table)  # noqa: F821
