"""Snakemake adapter: write one configured puzzle set (generated, official or a file) as puzzles.json."""

from autointerp.similarity.puzzle_stage import build_puzzle_set
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    i = snakemake.input  # noqa: F821
    n = build_puzzle_set(dict(snakemake.params.spec), snakemake.output[0],  # noqa: F821
                         corpus_path=getattr(i, "corpus", None), model_dir=getattr(i, "model", None))
    log.info("%d puzzles", n)
