"""Snakemake adapter: tokenise the configured corpus into fixed-length excerpts (Parquet)."""

from autointerp.extract.corpus import write_corpus
from autointerp.common.snakemake_io import rule_context
from autointerp.extract.subject_models import load_tokenizer

with rule_context(snakemake) as log:  # noqa: F821
    tokenizer = load_tokenizer(snakemake.input.model)  # noqa: F821
    table = write_corpus(dict(snakemake.params.spec), tokenizer, snakemake.output[0])  # noqa: F821
    log.info("wrote %d excerpts (%s windows available)", table.num_rows,
             table.schema.metadata[b"autointerp.n_windows_available"].decode())
