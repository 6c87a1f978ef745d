"""The documentation check itself (``workflow_utils.undocumented_columns``), on tiny folders; the workflow test runs
it on a finished run (``test_workflow.py::test_every_written_column_is_documented``)."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq

from workflow_utils import ROOT, undocumented_columns

DOCS = """# Tiny

| column | meaning |
|---|---|
| `kind`, `explainer` | documented together in one first cell |
| `{set}_mean` | a placeholder: any set name |
| `simulate[{explainer}/{simulator}/{set}]` | three placeholders |
| meaning | `mentioned` only outside the first cell |

Prose naming `in_prose` documents nothing.
"""


def _write(results, docs):
    docs.mkdir()
    (docs / "tiny.md").write_text(DOCS)
    (results / "runs" / "a").mkdir(parents=True)
    (results / "table.csv").write_text("kind,explainer,rnd_mean,top_set_mean,simulate[loop/loopchat/rnd],in_prose\n"
                                       "format,loop,0.1,0.2,1,x\n")
    pq.write_table(pa.table({"kind": ["x"], "mentioned": [1]}), results / "runs" / "a" / "scores.parquet")
    (results / "runs" / "explanations").mkdir()
    (results / "runs" / "explanations" / "Original.jsonl").write_text(
        json.dumps({"explainer": "loop", "line_key": 1}) + "\n" + json.dumps({"second_line_key": 2}) + "\n")
    (results / "runs" / "usage").mkdir()
    (results / "runs" / "usage" / "job.json").write_text(
        json.dumps({"totals": {"total_key": 1}, "calls": [{"call_key": 1}, {"later_call_key": 2}]}))
    (results / "runs" / "prompts.jsonl").write_text(json.dumps({"not_checked": 1}) + "\n")


def test_flags_undocumented_names_and_accepts_placeholders(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    _write(results, docs)
    assert undocumented_columns(results, docs) == {
        "call_key": ["runs/usage/job.json"],
        "calls": ["runs/usage/job.json"],
        "in_prose": ["table.csv"],
        "line_key": ["runs/explanations/Original.jsonl"],
        "mentioned": ["runs/a/scores.parquet"],
        "total_key": ["runs/usage/job.json"],
        "totals": ["runs/usage/job.json"],
    }
    # Documenting them (a placeholder stands for one name, never for a path or a bracket) empties the answer.
    (docs / "more.md").write_text("| `in_prose` | |\n| `mentioned` | |\n| `line_key`, `totals`, `calls` | |\n"
                                  "| `total_key`, `call_key` | |\n")
    assert undocumented_columns(results, docs) == {}
    (results / "extra.csv").write_text("adacs[loop/rnd],simulate[loop/rnd]\n")
    assert undocumented_columns(results, docs) == {"adacs[loop/rnd]": ["extra.csv"],
                                                   "simulate[loop/rnd]": ["extra.csv"]}


def test_the_docs_cover_the_schemas_the_stages_write(tmp_path):
    """Without a finished run: empty files with the stages' own schemas and keys against the real docs."""
    from autointerp.human_eval.store import TABLE5_COLUMNS
    from autointerp.llm.ledger import Ledger, UsageRecord
    from autointerp.similarity.stage import SIM_SCHEMA
    from autointerp.simulate.stage import SCORE_SCHEMA
    from autointerp.tables.n2g_metrics import METRICS

    pq.write_table(SCORE_SCHEMA.empty_table(), tmp_path / "scores.parquet")
    pq.write_table(SIM_SCHEMA.empty_table(), tmp_path / "similarity.parquet")
    (tmp_path / "table5.csv").write_text(",".join(TABLE5_COLUMNS) + "\n")
    (tmp_path / "metrics.csv").write_text(",".join(["layer", "neuron", "method", *METRICS]) + "\n")
    (tmp_path / "usage").mkdir()
    call = {f.name: None for f in dataclasses.fields(UsageRecord)}
    totals = {k: v for k, v in Ledger().totals().items() if k != "by_role"}
    (tmp_path / "usage" / "job.json").write_text(json.dumps({"totals": totals, "calls": [call]}))
    assert undocumented_columns(tmp_path, ROOT / "docs") == {}
