"""Each API stage driven through its script, as Snakemake runs it: a real `snakemake` call restricted to the
API rules (--allowed-rules), on hand-made inputs, against the loopback server. What the config says must
arrive in the request bodies and in the cache keys' material."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopback_server import LoopbackServer
from workflow_utils import make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow

RUN = "results/smol/pydocs"
NEURONS = [(0, 5), (1, 7)]  # neuron (0, 5) only ever gets unusable replies
SEED, SAMPLES, EXTRA = 11, 2, 2


def _reply(content: str, body: dict) -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}


def script(path: str, body: dict):
    from fake_simulator import simulator_script

    if path == "/v1/chat/completions":
        user = body["messages"][-1]["content"]
        return _reply("42" if "NEURON-0-5" in user else f" words about seed {body.get('seed')}.", body)
    return simulator_script(path, body)


def _prompt(layer: int, neuron: int, fmt: str = "Original", **extra) -> dict:
    return {"layer": layer, "neuron": neuron, "format": fmt, "prompt_hash": f"h{layer}-{neuron}", **extra,
            "messages": [{"role": "system", "content": "explain"},
                         {"role": "user", "content": f"NEURON-{layer}-{neuron} the main thing this neuron does is find"}]}


def _records(path) -> None:
    rows = []
    for layer, neuron in NEURONS:
        for split, source, n in (("train", "top", 5), ("valid", "top", 5), ("valid", "random", 5)):
            for i in range(n):
                tokens = [" the", " cat", f" w{i}" if source == "top" else f" r{i}", " sat"]
                # top records peak on " cat" (i < 3) or on " w3"/" w4" (i >= 3, higher peaks)
                peak = [0.0, 1.0 + i, 0.5, 0.0] if i < 3 else [0.0, 0.5, 2.0 + i, 0.0]
                acts = peak if source == "top" else [0.0, 0.0, 0.1, 0.0]
                rows.append({"layer": layer, "neuron": neuron, "split": split, "position": i, "source": source,
                             "source_rank": i, "excerpt_id": 100 * (split == "valid") + 10 * (source == "random") + i,
                             "tokens": tokens, "token_ids": [1, 2, 3, 4], "activations": acts,
                             "max_activation": 5.0, "cutoff": 1.0, "cutoff_quantile": 0.99})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with LoopbackServer(script=script) as server:
        role = {"provider": "openai", "model": "loop-model", "base_url": server.base_url,
                "api_key_env": "AUTOINTERP_TEST_KEY", "context_length": 8192}
        config = tiny_config(
            neuron_sets={"rnd": {"kind": "random", "total": 2}},
            prompt_formats={"Original": {}},
            explainers={"loop": {**role, "temperature": 0.7, "top_p": 0.9, "max_tokens": 33, "seed": SEED,
                                 "samples": 1}},
            simulators={"sim": {**role, "model": "sim-model", "top_logprobs": 7}},
            embedders={"emb": {**role, "model": "emb-model"}},
            adacs={"embedder": "emb", "references": {"rnd": {"kind": "top_tokens", "n_tokens": 2}}},
            puzzles={"embedder": "emb", "samples": SAMPLES,
                     "sets": {"gen": {"source": "generated", "rules": ["of"]}}},
            llm={"cache_dir": ".cache/llm", "max_extra_samples": EXTRA, "max_invalid_fraction": 0.5},
        )
        work = make_workdir(tmp_path_factory.mktemp("scripts"), config)
        prompts = work / RUN / "prompts" / "rnd" / "loop" / "Original.jsonl"
        prompts.parent.mkdir(parents=True)
        prompts.write_text("".join(json.dumps(_prompt(*n)) + "\n" for n in NEURONS))
        puzzle_prompts = work / "results/puzzles/gen/prompts/loop/Original.jsonl"
        puzzle_prompts.parent.mkdir(parents=True)
        puzzle_prompts.write_text(json.dumps(_prompt(0, 0, puzzle="p", ground_truth="cats")) + "\n")
        _records(work / RUN / "records" / "rnd.parquet")
        targets = [f"{RUN}/scores/rnd/loop/sim/Original.parquet", f"{RUN}/similarity/rnd/loop/Original.parquet",
                   "results/puzzles/gen/similarity/loop/Original.parquet"]
        proc = snakemake(work, "--cores", "1", "--allowed-rules", "explain", "simulate_score", "adacs_similarity",
                         "explain_puzzles", "puzzle_similarity", "--", *targets)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield work, list(server.requests)


def derived(layer: int, neuron: int, index: int, fmt: str = "Original") -> int:
    """The documented request seed (config/README.md): sha256 of 'seed|layer|neuron|format|index', 31 bits."""
    import hashlib

    digest = hashlib.sha256(f"{SEED}|{layer}|{neuron}|{fmt}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def _chats(requests, marker):
    return [r.body for r in requests if r.path == "/v1/chat/completions"
            and marker in r.body["messages"][-1]["content"]]


def _cached(work) -> list[dict]:
    return [json.loads(p.read_text()) for p in (work / ".cache" / "llm").rglob("*.json")]


def test_explain_settings_reach_requests_and_cache_keys(run):
    work, requests = run
    good = _chats(requests, "NEURON-1-7")
    assert len(good) == 1
    assert {k: good[0][k] for k in ("model", "temperature", "top_p", "max_tokens", "seed")} == \
        {"model": "loop-model", "temperature": 0.7, "top_p": 0.9, "max_tokens": 33, "seed": derived(1, 7, 0)}
    # the neuron with unusable replies: one regular sample + exactly max_extra_samples extra ones, each seeded apart
    bad = _chats(requests, "NEURON-0-5")
    expected = sorted(derived(0, 5, i) for i in range(1 + EXTRA))
    assert sorted(b["seed"] for b in bad) == expected and len(set(expected)) == 1 + EXTRA
    chat_material = [c["request"] for c in _cached(work) if c["request"]["op"] == "chat"
                     and "NEURON-0-5" in c["request"]["messages"][-1]["content"]]
    assert sorted(m["params"]["seed"] for m in chat_material) == expected
    assert {m["params"]["temperature"] for m in chat_material} == {0.7}
    lines = [json.loads(x) for x in (work / RUN / "explanations/rnd/loop/Original.jsonl").read_text().splitlines()]
    assert [(x["layer"], x["neuron"], x["params"]["seed"], x["params"]["request_seed"]) for x in lines] == \
        [(1, 7, SEED, derived(1, 7, 0))]
    assert "latency_s" not in lines[0] and "cache_hit" not in lines[0]  # measurements live in the usage file
    failures = [json.loads(x) for x in (work / RUN / "explanations/rnd/loop/Original.failures.jsonl").read_text()
                .splitlines()]
    assert len(failures[0]["raw_completions"]) == 1 + EXTRA


def test_puzzle_explanations_use_puzzles_samples(run):
    work, requests = run
    bodies = _chats(requests, "NEURON-0-0")
    assert sorted(b["seed"] for b in bodies) == sorted(derived(0, 0, i) for i in range(SAMPLES))


def test_simulator_and_embedder_settings_reach_requests(run):
    work, requests = run
    echo = [r.body for r in requests if r.path == "/v1/completions"]
    assert echo and {(b["model"], b["logprobs"], b["echo"], b["max_tokens"]) for b in echo} == {("sim-model", 7, True, 0)}
    assert len(echo) == 10  # one explanation (neuron 1:7) x its 10 valid records
    embeds = [r.body for r in requests if r.path == "/v1/embeddings"]
    assert embeds and {b["model"] for b in embeds} == {"emb-model"}
    texts = {t for b in embeds for t in b["input"]}
    assert 'the tokens "cat" and "w4"' in texts  # the top-token reference: most frequent peak, then the highest
    sims = pq.read_table(work / RUN / "similarity/rnd/loop/Original.parquet").to_pylist()
    assert [s["reference"] for s in sims] == ['the tokens "cat" and "w4"']
