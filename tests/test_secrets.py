"""The API key never reaches an exception (or its chain), a traceback, a log, the console, the ledger or a file,
even against an endpoint that echoes the request's Authorization header in its error bodies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import traceback
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from autointerp.llm import EndpointError, LLMClient, LLMError, LLMRequestError, redact
from loopback_server import LoopbackServer

ENV = "AUTOINTERP_SECRET_TEST_KEY"
KEY = "sk-proj-S3CRETxKEYx7f3a9b21c4d5e6f708"
TRACES = (KEY, KEY[3:], "S3CRETxKEYx7f3a9b21c4d5e6f708", "7f3a9b21c4d5e6f708", "S3CRETxKEY")


@pytest.fixture(autouse=True)
def planted_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def assert_clean(text: str, where: str) -> None:
    for trace in TRACES:
        assert trace not in text, f"key material {trace!r} in {where}:\n{text[-2000:]}"


def exception_texts(exc: BaseException) -> str:
    """Everything printing or inspecting the exception could show: message, repr, attributes, formatted
    traceback, and every exception reachable through __cause__ / __context__ (suppressed or not)."""
    parts, seen, todo = [], set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), repr(e.args), repr(getattr(e, "__dict__", {})),
                  "".join(traceback.format_exception(e))]
        todo += [e.__cause__, e.__context__]
    return "\n".join(parts)


def log_texts(caplog) -> str:
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return caplog.text + "\n".join(formatter.format(r) for r in caplog.records)


def role_config(base_url: str, **kw) -> dict:
    return {"provider": "openai", "model": "loop-model", "base_url": base_url, "api_key_env": ENV,
            "cache_dir": None, "max_retries": 1, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **kw}


# ---------------------------------------------------------------- the test server really leaks, and so does the SDK


def test_echoing_server_quotes_the_key_on_every_route():
    with LoopbackServer(echo_key=500) as srv:
        for path, data in (("/models", None), ("/chat/completions", b"{}"), ("/completions", b"{}"),
                           ("/embeddings", b"{}")):
            req = urllib.request.Request(srv.base_url + path, data=data, headers={"Authorization": f"Bearer {KEY}"})
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(req, timeout=10)
            assert ei.value.code == 500 and KEY in ei.value.read().decode()
    with LoopbackServer(echo_key=401) as srv:
        req = urllib.request.Request(srv.base_url + "/models", headers={"Authorization": f"Bearer {KEY}"})
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=10)
        assert ei.value.code == 401 and KEY in ei.value.read().decode()


def test_the_sdk_error_itself_carries_the_key():
    """Why chaining it (raise ... from e) leaked the key into tracebacks."""
    import httpx2
    import openai

    async def go():
        oa = openai.AsyncOpenAI(api_key=KEY, base_url=srv.base_url, max_retries=0)
        try:
            await oa.post("/chat/completions", cast_to=httpx2.Response, body={})
        finally:
            await oa.close()

    with LoopbackServer(echo_key=401) as srv:
        with pytest.raises(openai.AuthenticationError) as ei:
            asyncio.run(go())
    assert KEY in str(ei.value)


# ---------------------------------------------------------------- the client


OPS = {
    "chat": lambda c: c.chat([{"role": "user", "content": "hello"}], temperature=0.0, top_p=1.0, max_tokens=8),
    "echo": lambda c: c.completion_echo_logprobs("The cat sat", top_logprobs=5),
    "embed": lambda c: c.embed(["alpha", "beta"]),
}


@contextlib.contextmanager
def server_for(mode: str):
    """post401/post500: the endpoint check passes (no model list), every POST answers with the echoed key;
    all500: every route, GET /models included, answers 500 with the key; all401: the check itself is rejected."""
    kind, status = mode[:-3], int(mode[-3:])
    with LoopbackServer(echo_key=status if kind == "all" else None) as srv:
        if kind == "post":
            srv.add_faults("echo_key", 50, status=status)
        yield srv


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("mode", ["post401", "post500", "all500", "all401"])
def test_failed_calls_never_show_the_key(op, mode, caplog, capsys, tmp_path):
    caplog.set_level(logging.DEBUG)
    with server_for(mode) as srv:
        client = LLMClient.from_config("explainer", role_config(srv.base_url))
        with pytest.raises(LLMError) as ei:
            asyncio.run(OPS[op](client))
        posted = [r.headers.get("authorization") for r in srv.requests]
    exc = ei.value
    expected = EndpointError if mode == "all401" else LLMRequestError
    assert type(exc) is expected, exc
    if mode == "all401":
        assert f"rejected the API key from ${ENV} (HTTP 401)" in str(exc) and posted == []
    else:
        assert posted and set(posted) == {f"Bearer {KEY}"}  # the key was sent, and echoed back
        assert "Bearer ***" in str(exc)  # the echo is still visible, redacted
        assert exc.status == int(mode[-3:])
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    assert_clean(exception_texts(exc), "the exception")
    records = [dataclasses.asdict(r) for r in client.ledger.records]
    assert records and records[-1]["error"]
    assert_clean(json.dumps(records), "the ledger records")
    assert_clean(client.ledger.write_jsonl(tmp_path / "usage.jsonl").read_text(), "the ledger file")
    assert_clean(log_texts(caplog), "the logs")
    out, err = capsys.readouterr()
    assert_clean(out + err, "the console")


def test_endpoint_check_warning_is_clean_and_chained_errors_are_not(caplog):
    """all500: the check logs a WARNING (clean) and goes on; the POST's retries end in a clean error."""
    caplog.set_level(logging.DEBUG)
    with server_for("all500") as srv:
        client = LLMClient.from_config("explainer", role_config(srv.base_url))
        with pytest.raises(LLMRequestError):
            asyncio.run(OPS["chat"](client))
        assert srv.gets["/v1/models"] == 1 and srv.count("/v1/chat/completions") == 2
    warnings = [r for r in caplog.records if r.name == "autointerp.llm.client" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 500" in warnings[0].getMessage()
    assert_clean(log_texts(caplog), "the logs")


def test_many_concurrent_failures_stay_clean(caplog):
    from autointerp.llm import run_many

    caplog.set_level(logging.DEBUG)
    with server_for("post401") as srv:
        client = LLMClient.from_config("explainer", role_config(srv.base_url, concurrency=4))
        results = asyncio.run(run_many([OPS["chat"](client) for _ in range(8)]))
    assert all(isinstance(r, LLMRequestError) for r in results)
    for r in results:
        assert_clean(exception_texts(r), "an exception")
    assert_clean(log_texts(caplog), "the logs")


def test_malformed_bodies_that_quote_the_key_are_redacted(caplog):
    """A 200 whose body has the wrong shape and quotes the header in a value the parser chokes on."""
    def script(path, body):
        return {"choices": [{"message": {"content": "x"}, "logprobs": {"content": [
            {"token": "a", "logprob": f"Bearer {KEY}"}]}}]}

    caplog.set_level(logging.DEBUG)
    with LoopbackServer(script=script) as srv:
        client = LLMClient.from_config("explainer", role_config(srv.base_url, max_retries=0))
        with pytest.raises(LLMRequestError, match="MalformedResponseError") as ei:
            asyncio.run(client.chat([{"role": "user", "content": "x"}], temperature=0.0, top_p=1.0, max_tokens=4,
                                    logprobs=True))
    assert ei.value.__cause__ is None
    assert_clean(exception_texts(ei.value), "the exception")
    assert_clean(json.dumps([dataclasses.asdict(r) for r in client.ledger.records]), "the ledger")
    assert_clean(log_texts(caplog), "the logs")


def test_redact():
    assert redact(f"got {KEY} and {json.dumps(KEY)}", KEY) == 'got *** and "***"'
    assert redact("Authorization: Bearer abc.def-123", None) == "Authorization: Bearer ***"
    assert redact("key sk-abcdefghijklmnop0123 here", None) == "key sk-*** here"
    assert redact("role x: explainer exited", "x") == "role ***: explainer exited"  # short keys: whole words
    assert redact("nothing to hide", KEY) == "nothing to hide"


# ---------------------------------------------------------------- the stages, as a Snakemake job runs them


def run_as_rule(tmp_path: Path, rule: str, job) -> tuple[BaseException | None, BaseException | None, str]:
    """Run ``job()`` inside the project's rule_context (its log FileHandler, its known-error handling), with the
    root logger at DEBUG; return (the job's own exception, what left rule_context, the log file's text)."""
    from autointerp.common.snakemake_io import rule_context

    log_path = tmp_path / "logs" / f"{rule}.log"
    inner = outer = None
    try:
        with rule_context(types.SimpleNamespace(log=[str(log_path)], rule=rule)):
            logging.getLogger().setLevel(logging.DEBUG)
            try:
                job()
            except BaseException as e:
                inner = e
                raise
    except BaseException as e:  # noqa: BLE001 - SystemExit for known errors, or the error itself
        outer = e
    return inner, outer, log_path.read_text(encoding="utf-8")


def assert_job_failed_cleanly(tmp_path, inner, outer, log_text, caplog, capsys, srv, mode):
    assert inner is not None and outer is not None, "the job should have failed"
    # It failed at the endpoint (not earlier on its inputs): the key went out, and came back echoed.
    assert srv.gets["/v1/models"] == 1
    sent = {r.headers.get("authorization") for r in srv.requests}
    assert sent == (set() if mode == "all401" else {f"Bearer {KEY}"})
    assert not (isinstance(outer, SystemExit) and outer.code in (0, None))
    assert_clean(log_text, "the rule log")
    assert_clean(exception_texts(inner), "the job's exception")
    assert_clean(exception_texts(outer), "what the rule raised")
    assert_clean(log_texts(caplog), "the logs")
    out, err = capsys.readouterr()
    assert_clean(out + err, "the console")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert_clean(path.read_bytes().decode("utf-8", "replace"), str(path))


STAGE_MODES = ["all401", "post401", "all500"]


def stage_role(base_url: str) -> dict:
    return {"provider": "openai", "model": "loop-model", "base_url": base_url, "api_key_env": ENV,
            "max_retries": 1, "concurrency": 2}


def explain_prompts(path: Path) -> Path:
    lines = [{"layer": 0, "neuron": n, "format": "Summary", "prompt_hash": f"h{n}",
              "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": f"Neuron 0:{n} find"}]}
             for n in (1, 2)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.parametrize("mode", STAGE_MODES)
def test_explain_stage_never_shows_the_key(mode, tmp_path, caplog, capsys):
    from autointerp.explain.stage import ExplainSettings, run_explain_job
    from workflow_utils import rule_io, tiny_config, validated

    caplog.set_level(logging.DEBUG)
    with server_for(mode) as srv:
        config = validated(tiny_config(explainers={"loop": stage_role(srv.base_url)},
                                       llm={"cache_dir": str(tmp_path / "cache")}))
        settings = ExplainSettings.from_config(config, {"explainer": "loop"})
        io = rule_io({"prompts": explain_prompts(tmp_path / "prompts.jsonl"), "engine": []},
                     {"explanations": tmp_path / "out" / "e.jsonl", "failures": tmp_path / "out" / "f.jsonl",
                      "usage": tmp_path / "out" / "u.json"})
        inner, outer, log_text = run_as_rule(tmp_path, "explain", lambda: run_explain_job(settings, io))
    assert_job_failed_cleanly(tmp_path, inner, outer, log_text, caplog, capsys, srv, mode)


def write_records(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"layer": 0, "neuron": 1, "split": split, "position": i, "source": source, "source_rank": i,
             "excerpt_id": 10 * (split == "valid") + i, "tokens": ["The", " cat", " sat"],
             "token_ids": [1, 2, 3], "activations": [0.0, 1.0 + i, 0.5], "max_activation": 3.0, "cutoff": 0.5,
             "cutoff_quantile": 0.9}
            for split in ("train", "valid") for i, source in enumerate(("top", "random"))]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("sim_mode", ["prompt_logprobs", "chat_logprobs"])
@pytest.mark.parametrize("mode", STAGE_MODES)
def test_simulate_stage_never_shows_the_key(mode, sim_mode, tmp_path, caplog, capsys):
    from autointerp.simulate.stage import SimulateSettings, run_simulate_job
    from workflow_utils import rule_io, tiny_config, validated

    caplog.set_level(logging.DEBUG)
    explanations = tmp_path / "explanations.jsonl"
    explanations.write_text(json.dumps({"layer": 0, "neuron": 1, "format": "Summary", "sample": 0,
                                        "explanation": "cats", "valid": True}) + "\n")
    with server_for(mode) as srv:
        config = validated(tiny_config(simulators={"sim": {**stage_role(srv.base_url), "mode": sim_mode}},
                                       llm={"cache_dir": str(tmp_path / "cache")}))
        settings = SimulateSettings.from_config(config, {"simulator": "sim"})
        io = rule_io({"explanations": explanations, "records": write_records(tmp_path / "records.parquet"),
                      "engine": []},
                     {"scores": tmp_path / "out" / "s.parquet", "predictions": tmp_path / "out" / "p.parquet",
                      "usage": tmp_path / "out" / "u.json"})
        inner, outer, log_text = run_as_rule(tmp_path, "simulate_score", lambda: run_simulate_job(settings, io))
    assert_job_failed_cleanly(tmp_path, inner, outer, log_text, caplog, capsys, srv, mode)


@pytest.mark.parametrize("kind", ["detection", "fuzzing"])
@pytest.mark.parametrize("mode", STAGE_MODES)
def test_classify_stage_never_shows_the_key(mode, kind, tmp_path, caplog, capsys):
    from autointerp.classify.stage import ClassifySettings, run_classify_job
    from workflow_utils import rule_io, tiny_config, validated

    caplog.set_level(logging.DEBUG)
    explanations = tmp_path / "explanations.jsonl"
    explanations.write_text(json.dumps({"layer": 0, "neuron": 1, "format": "Summary", "sample": 0,
                                        "explanation": "cats", "valid": True}) + "\n")
    with server_for(mode) as srv:
        config = validated(tiny_config(scorers={"sc": stage_role(srv.base_url)},
                                       llm={"cache_dir": str(tmp_path / "cache")}))
        settings = ClassifySettings.from_config(config, {"scorer": "sc", "kind": kind})
        io = rule_io({"explanations": explanations, "records": write_records(tmp_path / "records.parquet"),
                      "engine": []},
                     {"scores": tmp_path / "out" / "s.parquet", "usage": tmp_path / "out" / "u.json"})
        inner, outer, log_text = run_as_rule(tmp_path, "classify", lambda: run_classify_job(settings, io))
    assert_job_failed_cleanly(tmp_path, inner, outer, log_text, caplog, capsys, srv, mode)


@pytest.mark.parametrize("mode", STAGE_MODES)
def test_similarity_stage_never_shows_the_key(mode, tmp_path, caplog, capsys):
    from autointerp.similarity.stage import SimilaritySettings, run_puzzle_similarity_job
    from workflow_utils import rule_io, tiny_config, validated

    caplog.set_level(logging.DEBUG)
    explanations = tmp_path / "explanations.jsonl"
    explanations.write_text("".join(json.dumps(
        {"layer": 0, "neuron": 0, "format": "Original", "sample": i, "puzzle": "p", "explanation": f"words {i}",
         "ground_truth": "the word of", "valid": True}) + "\n" for i in range(2)))
    with server_for(mode) as srv:
        config = validated(tiny_config(
            embedders={"emb": stage_role(srv.base_url)},
            adacs={"embedder": "emb", "references": {"rnd": {"kind": "top_tokens", "n_tokens": 2}}},
            llm={"cache_dir": str(tmp_path / "cache")}))
        settings = SimilaritySettings.from_config(config, {})
        io = rule_io({"explanations": explanations},
                     {"similarity": tmp_path / "out" / "sim.parquet", "usage": tmp_path / "out" / "u.json"})
        inner, outer, log_text = run_as_rule(tmp_path, "puzzle_similarity",
                                             lambda: run_puzzle_similarity_job(settings, io))
    assert_job_failed_cleanly(tmp_path, inner, outer, log_text, caplog, capsys, srv, mode)
