"""The cost estimate's arithmetic and the budget gate (the estimate against real usage: tests/test_workflow.py)."""

from __future__ import annotations

import json

import pytest

from autointerp.common.records import ActivationRecord
from autointerp.tables.cost import (BudgetError, check_budget, explain_rows, simulate_rows, simulation_tokens,
                                    summary_lines, total_row)

PRICED = {"provider": "openai", "model": "m", "encoding": "cl100k_base", "price_input_per_1m": 2.0,
          "price_output_per_1m": 8.0, "max_tokens": 60, "samples": 2}


def _prompts(tmp_path, counts):
    path = tmp_path / "rnd" / "gpt" / "Summary.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"layer": 0, "neuron": i, "prompt_tokens": n}) + "\n"
                            for i, n in enumerate(counts)))
    return [{"path": str(path), "set": "rnd", "explainer": "gpt", "format": "Summary"}]


def test_explain_rows_count_samples_prices_and_the_extra_sample_bound(tmp_path):
    [row] = explain_rows(_prompts(tmp_path, [1000, 3000]), {"gpt": PRICED}, max_extra_samples=3)
    assert (row["calls"], row["prompt_tokens"], row["completion_tokens"]) == (4, 8000, 4 * 15)
    assert row["usd"] == pytest.approx((8000 * 2.0 + 60 * 8.0) / 1e6)
    assert row["calls_max"] == 16  # every call drawing all 3 extra samples
    assert row["usd_max"] == pytest.approx((4 * 8000 * 2.0 + 16 * 60 * 8.0) / 1e6)
    assert row["usd_per_1k_neurons"] == pytest.approx(row["usd"] / 2 * 1000)
    local = explain_rows(_prompts(tmp_path / "l", [1000]), {"gpt": {**PRICED, "provider": "local"}},
                         max_extra_samples=3)[0]
    assert local["usd"] == local["usd_max"] == 0.0  # the embedded engine costs nothing, whatever the prices say


def test_simulation_tokens_by_mode():
    tokens = [" The", " cat", " sat", "\t", " on", " the", " mat", "."]
    echo = simulation_tokens(tokens, {"mode": "prompt_logprobs", "encoding": "cl100k_base"}, "cats")
    chat = simulation_tokens(tokens, {"mode": "chat_logprobs", "encoding": "cl100k_base"}, "cats")
    assert echo[1] == echo[2] == 0  # echo calls generate nothing
    assert len(tokens) * 2 <= chat[1] <= chat[2]  # one "token<TAB>value" line per token, within the request cap
    longer = simulation_tokens(tokens * 4, {"mode": "prompt_logprobs", "encoding": "cl100k_base"}, "cats")
    assert longer[0] > echo[0] > 500  # the few-shot prompt, growing with the record


def test_simulate_rows_scale_with_records_samples_and_formats():
    rec = ActivationRecord([" a", " b", " c"], [0.0, 1.0, 0.0], excerpt_id=1)
    records = {"rnd": {(0, 1): {"valid": [rec, rec]}, (0, 2): {"valid": [rec, rec]}}}
    sim = {"provider": "openai", "model": "s", "mode": "prompt_logprobs", "encoding": "cl100k_base",
           "price_input_per_1m": 1.0, "price_output_per_1m": 0.0}
    items = [{"set": "rnd", "explainer": "gpt", "format": f} for f in ("Original", "Summary")]
    rows = simulate_rows(records, {"s": sim}, {"gpt": PRICED}, items)
    assert [r["calls"] for r in rows] == [8, 8]  # 2 neurons x 2 records x 2 samples, per format
    assert rows[0]["prompt_tokens"] == rows[1]["prompt_tokens"] > 0
    assert rows[0]["usd_max"] > rows[0]["usd"]  # a 60-token explanation in the bound


def test_the_budget_gate_names_every_stage():
    rows = [{"stage": "explain", "usd": 1.5, "usd_max": 6.0, "calls": 10, "prompt_tokens": 0,
             "completion_tokens": 0, "calls_max": 40},
            {"stage": "simulate_score", "usd": 40.0, "usd_max": 41.0, "calls": 100, "prompt_tokens": 0,
             "completion_tokens": 0, "calls_max": 100}]
    check_budget(rows, None, "x.csv")
    check_budget(rows, 41.5, "x.csv")  # the estimate, not the upper bound, is held against the budget
    with pytest.raises(BudgetError, match=r"\$41.50 exceeds llm.max_cost_usd = \$10.00 \(explain \$1.50, "
                                          r"simulate_score \$40.00\)"):
        check_budget(rows, 10.0, "x.csv")
    assert total_row(rows)["calls"] == 110
    assert summary_lines(rows, "x.csv")[0].startswith("cost estimate (x.csv): $41.50 for 110 calls")
