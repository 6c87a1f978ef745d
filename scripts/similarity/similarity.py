"""Snakemake adapter: embedding similarity of one explanation file to its references (AdaCS or puzzle truth)."""

from autointerp.common.io import read_jsonl
from autointerp.similarity.stage import load_references, run_similarity_job
from autointerp.common.snakemake_io import rule_context

with rule_context(snakemake) as log:  # noqa: F821
    i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    references = None  # puzzles: each line carries its ground truth
    if hasattr(p, "reference"):
        neurons = sorted({(x["layer"], x["neuron"]) for x in read_jsonl(i.explanations)})
        references = load_references(dict(p.reference), neurons=neurons, reference_files=list(i.references))
    summary = run_similarity_job(
        i.explanations, o.similarity, o.usage, references=references, role=dict(p.role), cache_dir=p.cache_dir,
        normalise=getattr(p, "normalise", None),
    )
    log.info("similarity summary: %s", summary)
