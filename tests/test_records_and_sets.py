"""Record splits, neuron sets, corpus building and config validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from autointerp.common.config import ConfigError, validate_config
from autointerp.extract.corpus import CorpusError, build_corpus, cut_excerpts, read_token_ids, write_corpus
from autointerp.extract.activations import ExtractionSettings, extract, write_layer_shards
from autointerp.extract.neuron_sets import NeuronSetError, read_csv_neurons, select_neurons
from autointerp.extract.records import RecordError, build_records, split_indices
from tiny_models import random_token_ids, tiny_subject, word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "config.schema.yaml"


def test_split_positions_match_reference():
    plan = split_indices(20, 50, 5)
    assert plan["train"] == [("top", i) for i in (0, 4, 8, 12, 16)]
    assert plan["valid"] == [("top", i) for i in (2, 6, 10, 14, 18)] + [("random", i) for i in (1, 4, 7, 10, 13)]
    with pytest.raises(RecordError, match="raise extraction.top_k"):
        split_indices(18, 50, 5)
    with pytest.raises(RecordError, match="raise extraction.random_n"):
        split_indices(20, 13, 5)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    model = tiny_subject(seed=2)
    tokens = random_token_ids(120, 10, seed=4)
    settings = ExtractionSettings(layers=[0, 1], top_k=20, random_n=50, seed=1, batch_size=16)
    run = extract(model, tokens, settings)
    paths = {layer: out / f"layer{layer}.parquet" for layer in (0, 1)}
    write_layer_shards(run, settings, paths, {"model": "tiny", "n_layers": 2, "d_mlp": model.d_mlp})
    return {k: str(v) for k, v in paths.items()}, tokens, model


def test_records_disjoint_and_faithful(shards):
    paths, tokens, model = shards
    neurons = [(0, 3), (1, 7), (1, 40)]
    table = build_records(neurons, paths, tokens, model.tokenizer, cutoff_quantile=0.99)
    assert table.num_rows == len(neurons) * 15
    recs = load_records_from(table)
    for layer, neuron in neurons:
        row = pq.read_table(paths[layer]).slice(neuron, 1).to_pylist()[0]
        entry = recs[(layer, neuron)]
        train_ids = [r.excerpt_id for r in entry["train"]]
        valid_ids = [r.excerpt_id for r in entry["valid"]]
        assert not set(train_ids) & set(valid_ids)
        assert train_ids == row["top_excerpt_ids"][0:20:4]
        assert valid_ids[:5] == row["top_excerpt_ids"][2:20:4]
        usable = [e for e in row["random_excerpt_ids"] if e not in set(row["top_excerpt_ids"])]
        assert valid_ids[5:] == usable[1:15:3]
        assert entry["cutoff"] == pytest.approx(row["quantiles"][2])
        first = entry["train"][0]
        assert first.tokens == [model.tokenizer.decode([int(t)]) for t in tokens[first.excerpt_id]]
        np.testing.assert_allclose(first.activations, row["top_activations"][0], rtol=1e-6)


def load_records_from(table):
    out = {}
    for r in table.to_pylist():
        e = out.setdefault((r["layer"], r["neuron"]), {"train": [], "valid": [], "cutoff": r["cutoff"]})
        from autointerp.common.records import ActivationRecord

        e[r["split"]].append(ActivationRecord(r["tokens"], r["activations"], excerpt_id=r["excerpt_id"]))
    return out


def test_random_sample_overlapping_top_is_skipped(shards):
    """A random-sample excerpt that is among the neuron's top-k never reaches valid."""
    paths, tokens, model = shards
    table = pq.read_table(paths[0])
    for neuron in range(table.num_rows):
        row = table.slice(neuron, 1).to_pylist()[0]
        if set(row["random_excerpt_ids"]) & set(row["top_excerpt_ids"]):
            break
    else:
        pytest.fail("fixture has no neuron whose random sample overlaps its top-k")
    recs = build_records([(0, neuron)], paths, tokens, model.tokenizer).to_pylist()
    valid = {r["excerpt_id"] for r in recs if r["split"] == "valid" and r["source"] == "random"}
    assert not valid & set(row["top_excerpt_ids"])


def test_unknown_cutoff_quantile(shards):
    paths, tokens, model = shards
    with pytest.raises(RecordError, match="cutoff quantile 0.95 was not extracted"):
        build_records([(0, 1)], paths, tokens, model.tokenizer, cutoff_quantile=0.95)


def test_neuron_sets(shards, tmp_path):
    paths, _, _ = shards
    rnd = select_neurons({"kind": "random", "per_layer": 3, "seed": 0}, paths)
    assert len(rnd) == 6 and rnd == select_neurons({"kind": "random", "per_layer": 3, "seed": 0}, paths)
    assert rnd != select_neurons({"kind": "random", "per_layer": 3, "seed": 1}, paths)
    top = select_neurons({"kind": "top", "total": 4}, paths)
    maxima = {(layer, n): m for layer, p in paths.items()
              for n, m in enumerate(pq.read_table(p, columns=["max_activation"]).column(0).to_pylist())}
    best = sorted(maxima, key=lambda k: -maxima[k])[:4]
    assert sorted((r["layer"], r["neuron"]) for r in top) == sorted(best)
    csv = tmp_path / "n.csv"
    csv.write_text("layer,neuron,score,explanation\n1,5,0.5,\" words.\"\n0,2,0.1,x\n")
    rows = select_neurons({"kind": "csv", "path": str(csv)}, paths)
    assert [(r["layer"], r["neuron"], r["explanation"]) for r in rows] == [(1, 5, " words."), (0, 2, "x")]
    csv.write_text("layer,neuron\n0,48\n")
    with pytest.raises(NeuronSetError, match=r"n.csv:2: neuron 48 out of range 0..47"):
        select_neurons({"kind": "csv", "path": str(csv)}, paths)
    csv.write_text("layer,neuron\n2,1\n")
    with pytest.raises(NeuronSetError, match=r"layer 2 out of range 0..1"):
        read_csv_neurons(csv, n_layers=2, d_mlp=48)


def test_corpus_is_deterministic_and_deduplicated(tmp_path):
    tok = word_tokenizer()
    doc = tmp_path / "a.txt"
    doc.write_text(" ".join(f"w{i % 40}" for i in range(2000)))
    spec = {"source": "text_files", "files": [{"path": str(doc)}], "excerpt_tokens": 8, "n_excerpts": 50, "seed": 3}
    a, b = build_corpus(spec, tok), build_corpus(spec, tok)
    assert a.equals(b)
    rows = a.column("token_ids").to_pylist()
    assert len({tuple(r) for r in rows}) == len(rows) == 5  # the text repeats every 40 words: 5 distinct windows
    write_corpus(spec, tok, tmp_path / "c.parquet")
    assert read_token_ids(tmp_path / "c.parquet").shape == (5, 8)
    assert cut_excerpts([[1, 2, 3], [4, 5]], 2).tolist() == [[1, 2], [3, 4]]


def test_empty_corpus_errors(tmp_path):
    tok = word_tokenizer()
    (tmp_path / "empty.txt").write_text("\n\n")
    spec = {"source": "text_files", "files": [{"path": str(tmp_path / "empty.txt")}], "excerpt_tokens": 8,
            "n_excerpts": 5}
    with pytest.raises(CorpusError, match="is empty"):
        build_corpus(spec, tok)
    spec["files"] = [{"path": str(tmp_path / "missing*.txt")}]
    with pytest.raises(CorpusError, match="matched no files"):
        build_corpus(spec, tok)


def test_python_docs_corpus_needs_no_files():
    def tok(text, add_special_tokens=False):  # one token per character is enough to cut windows
        return {"input_ids": [ord(c) for c in text]}

    table = build_corpus({"source": "python_docs", "excerpt_tokens": 16, "n_excerpts": 10}, tok)
    assert table.num_rows == 10


def test_config_lists_every_violation():
    config = {"subject": {"id": "bad id!", "model": ""}, "corpus": {"id": "c", "source": "ftp"},
              "extraction": {"top_k": 0}, "neuron_sets": {"r": {"kind": "random"}}}
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    msg = str(info.value)
    for fragment in ("config['subject']['id']", "config['subject']['model']", "config['corpus']['source']",
                     "config['extraction']['top_k']", "config['neuron_sets']['r']"):
        assert fragment in msg, fragment
    assert "5 problems" in msg


def test_default_config_is_valid_and_gets_defaults():
    import yaml

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate_config(config, SCHEMA)
    assert config["subject"]["hook"] == "blocks.{layer}.mlp.hook_post"
    assert config["extraction"]["top_k"] == 20 and config["extraction"]["random_n"] == 50


@pytest.mark.parametrize("name", ["paper_gpt2xl.yaml", "openai_compatible.yaml"])
def test_presets_are_valid(name):
    import yaml

    from autointerp.prompts.stage import resolve_format

    config = yaml.safe_load((ROOT / "config" / "presets" / name).read_text())
    validate_config(config, SCHEMA)
    for fmt, spec in config["prompt_formats"].items():
        resolve_format(fmt, spec)
    assert config["simulators"] and config["explainers"]


def test_records_decode_every_token_id_as_the_full_tokenizer_does(embedded_model_dir, tmp_path):
    """Records decode with the prepared tokenizer.json alone (no transformers import per chunk job); every id of the
    embedded model's vocabulary and of a word-level tokenizer must come out as the full tokenizer decodes it."""
    import json

    from autointerp.extract.records import TokenDecoder
    from autointerp.extract.subject_models import _TokenizerFile, load_decoder, load_tokenizer

    words = tmp_path / "words"
    (words / "hf").mkdir(parents=True)
    word_tokenizer().save_pretrained(words / "hf")
    (words / "model_info.json").write_text(json.dumps({"source": "hf", "model": "words"}))
    for prepared in (embedded_model_dir, words):
        light, full = load_decoder(prepared), load_tokenizer(prepared)
        assert isinstance(light, _TokenizerFile)
        ids = list(range(len(full)))
        assert len(ids) > 90
        assert TokenDecoder(light)(ids) == TokenDecoder(full)(ids)
