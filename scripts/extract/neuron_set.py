"""Snakemake adapter: choose one neuron set from the activation shards."""

from autointerp.extract.activations import layer_shards
from autointerp.extract.neuron_sets import select_neurons, write_neuron_set
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    rows = select_neurons(dict(snakemake.params.spec), layer_shards(snakemake.input.activations))  # noqa: F821
    write_neuron_set(rows, snakemake.output[0])  # noqa: F821
    log.info("%d neurons", len(rows))
