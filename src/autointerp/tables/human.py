"""Table 5 as a tables job: the human-evaluation stage's ``table5`` (autointerp.human_eval) on the rated studies."""

from __future__ import annotations

from autointerp.common.snakemake_io import RuleIO


def run_table5(settings: None, io: RuleIO) -> dict:
    """results/table5.csv from the rated study databases or exports listed under human_eval.ratings."""
    from autointerp.human_eval import table5

    return {"rows": len(table5(io.inputs, io.outputs[0]))}
