"""Snakemake adapter: train/valid records and highlight cutoffs for one neuron set."""

from autointerp.extract.corpus import read_token_ids
from autointerp.extract.activations import layer_shards
from autointerp.common.io import atomic_write_parquet
from autointerp.extract.neuron_sets import read_neuron_set
from autointerp.extract.records import build_records
from autointerp.common.snakemake_io import rule_context
from autointerp.extract.subject_models import load_tokenizer

with rule_context(snakemake) as log:  # noqa: F821
    i, p = snakemake.input, snakemake.params  # noqa: F821
    table = build_records(
        read_neuron_set(i.neurons), layer_shards(i.activations), read_token_ids(i.corpus),
        load_tokenizer(i.model), n_per_split=p.records["n_examples_per_split"],
        cutoff_quantile=p.records["cutoff_quantile"],
    )
    atomic_write_parquet(table, snakemake.output[0])  # noqa: F821
    log.info("%d records", table.num_rows)
