"""The explain stage against the loopback server: valid/invalid replies, extra samples, failure threshold."""

from __future__ import annotations

import json

import pytest

from autointerp.explain.stage import ExplainError, ExplainSettings, clean_explanation, run_explain_job
from workflow_utils import rule_io, tiny_config, validated


def prompt_line(layer, neuron, fmt="Summary"):
    return {"layer": layer, "neuron": neuron, "format": fmt, "prompt_hash": f"h{layer}{neuron}",
            "messages": [{"role": "system", "content": "sys"},
                         {"role": "user", "content": f"Neuron {layer}:{neuron} ... is find"}]}


def chat_script(replies):
    """Reply per neuron, in turn: replies[(layer, neuron)] is a list consumed one call at a time."""
    def script(path, body):
        if path != "/v1/chat/completions":
            return None
        text = body["messages"][-1]["content"].split()[1]
        layer, neuron = map(int, text.split(":"))
        queue = replies[(layer, neuron)]
        content = queue.pop(0) if len(queue) > 1 else queue[0]
        return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
    return script


def role(base_url):
    return {"provider": "openai", "model": "loop", "base_url": base_url, "api_key_env": None}


def settings(explainer: dict, tmp_path, **llm) -> ExplainSettings:
    """ExplainSettings as the workflow builds them: from a validated config, by the one constructor."""
    config = validated(tiny_config(explainers={"loop": explainer}, llm={"cache_dir": str(tmp_path / "cache"), **llm}))
    return ExplainSettings.from_config(config, {"explainer": "loop"})


def run(s, prompts, out, fail, usage):
    return run_explain_job(s, rule_io({"prompts": prompts, "engine": []},
                                      {"explanations": out, "failures": fail, "usage": usage}))


def test_clean_explanation():
    assert clean_explanation(" words related to colors.\nMore text") == "words related to colors."
    assert clean_explanation("\n\n  the main thing this neuron does is find numbers") == "numbers"
    assert clean_explanation("   ") is None
    assert clean_explanation(" ...!") is None


def test_invalid_replies_are_retried_and_never_passed_on(tmp_path, loopback):
    loopback.script = chat_script({(0, 1): [" colour words."], (0, 2): ["", "  ", " numbers."],
                                   (1, 3): ["..."]})
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(prompt_line(*n)) + "\n" for n in [(0, 1), (0, 2), (1, 3)]))
    out, fail, usage = tmp_path / "e.jsonl", tmp_path / "f.jsonl", tmp_path / "u.json"
    s = settings(role(loopback.base_url), tmp_path, max_extra_samples=2, max_invalid_fraction=0.5)
    summary = run(s, prompts, out, fail, usage)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["layer"], r["neuron"], r["explanation"]) for r in lines] == [(0, 1, "colour words."), (0, 2, "numbers.")]
    assert lines[1]["sample_index"] != 0  # came from an extra sample
    failures = [json.loads(x) for x in fail.read_text().splitlines()]
    assert [(f["layer"], f["neuron"]) for f in failures] == [(1, 3)] and failures[0]["raw_completions"] == ["..."] * 3
    assert summary["neurons_without_explanation"] == 1
    assert json.loads(usage.read_text())["totals"]["calls"] == 1 + 3 + 3
    # a rerun is answered from the cache
    before = loopback.count()
    run(s, prompts, out, fail, usage)
    assert loopback.count() == before


def test_too_many_failures_fail_the_job(tmp_path, loopback):
    loopback.script = chat_script({(0, 1): [""], (0, 2): [""], (1, 3): [" ok words"]})
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(prompt_line(*n)) + "\n" for n in [(0, 1), (0, 2), (1, 3)]))
    out = tmp_path / "e.jsonl"
    with pytest.raises(ExplainError, match=r"2 of 3 neurons ended without a valid explanation.*0:1, 0:2"):
        run(settings(role(loopback.base_url), tmp_path, max_extra_samples=1, max_invalid_fraction=0.2),
            prompts, out, tmp_path / "f.jsonl", tmp_path / "u.json")
    assert not out.exists()  # nothing half-written


def test_missing_key_for_remote_provider_names_the_variable(tmp_path, monkeypatch):
    from autointerp.llm import LLMConfigError

    monkeypatch.delenv("MY_PAID_KEY", raising=False)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps(prompt_line(0, 1)) + "\n")
    with pytest.raises(LLMConfigError, match="MY_PAID_KEY"):
        run(settings({"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "MY_PAID_KEY"}, tmp_path),
            prompts, tmp_path / "e.jsonl", tmp_path / "f.jsonl", tmp_path / "u.json")


def test_failed_calls_fail_the_job_and_a_rerun_retries_only_them(tmp_path, loopback, capsys):
    loopback.script = chat_script({(0, n): [f" words {n}."] for n in range(6)})
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(prompt_line(0, n)) + "\n" for n in range(6)))
    out, fail, usage = tmp_path / "e.jsonl", tmp_path / "f.jsonl", tmp_path / "u.json"
    s = settings(role(loopback.base_url), tmp_path)
    loopback.add_faults("400", n=2)  # two calls fail for good (not retryable); the other four succeed
    with pytest.raises(ExplainError, match=r"2 of 6 explain calls failed for good \(first: LLMRequestError: chat "
                                           r"failed .* HTTP 400.*the other 4 are cached, so rerunning"):
        run(s, prompts, out, fail, usage)
    assert not out.exists()
    assert "test: 4/6 neurons explained; 2 calls failed (LLMRequestError" in capsys.readouterr().err
    before = loopback.count()
    summary = run(s, prompts, out, fail, usage)  # the same job again
    assert loopback.count() - before == 2  # exactly the failed calls were sent again; the rest were cache hits
    assert summary["failed_calls"] == 0 and len(out.read_text().splitlines()) == 6


def test_a_tolerated_failure_is_reported_and_leaves_the_neuron_missing(tmp_path, loopback, capsys):
    loopback.script = chat_script({(0, n): [f" words {n}."] for n in range(4)})
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(prompt_line(0, n)) + "\n" for n in range(4)))
    out, fail, usage = tmp_path / "e.jsonl", tmp_path / "f.jsonl", tmp_path / "u.json"
    loopback.add_faults("400", n=1)
    summary = run(settings(role(loopback.base_url), tmp_path, max_failed_fraction=0.5), prompts, out, fail, usage)
    assert summary["failed_calls"] == 1 and summary["neurons_without_explanation"] == 1
    assert len(out.read_text().splitlines()) == 3
    [failure] = [json.loads(x) for x in fail.read_text().splitlines()]
    assert failure["kind"] == "call_failed" and "HTTP 400" in failure["reason"]
    assert "3/4 neurons explained; 1 calls failed" in capsys.readouterr().err
