"""Bad input is refused in one clear line (what, where, how to fix), never mangled or dumped as a traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

import autointerp
from autointerp.common.io import InputFileError, atomic_write_parquet, read_jsonl, read_parquet
from autointerp.common.snakemake_io import rule_context
from autointerp.extract.activations import ExtractionError, layer_shards
from autointerp.extract.corpus import CorpusError, build_corpus, iter_documents, read_token_ids, write_corpus
from autointerp.extract.records import build_records, load_records, quantile_index
from autointerp.llm.config import LLMConfigError, RoleConfig

LATIN1_TEXT = "Caf\u00e9 au lait\n%\nna\u00efve r\u00e9sum\u00e9\n"  # encoded as Latin-1: 0xe9 is not UTF-8


def char_tok(text, add_special_tokens=False):
    return {"input_ids": [ord(c) % 256 for c in text]}


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert isinstance(exc_info.value, autointerp.known_errors()), type(exc_info.value)
    return msg


def text_spec(*paths, fmt="fortune", **extra):
    return {"id": "tiny-corpus", "source": "text_files", "files": [{"path": str(p), "format": fmt} for p in paths],
            "excerpt_tokens": 4, "n_excerpts": 3, **extra}


# -- 1. corpus files are read strictly as UTF-8 --------------------------------------------------------------------

def test_non_utf8_corpus_file_is_refused_with_offset_and_fix(tmp_path):
    good = tmp_path / "good"
    good.write_text("plain ascii\n%\nand \u00fcml\u00e4uts in UTF-8\n", encoding="utf-8")
    bad = tmp_path / "latin"
    data = LATIN1_TEXT.encode("latin-1")
    bad.write_bytes(data)
    out = tmp_path / "results" / "corpus.parquet"
    with pytest.raises(CorpusError) as info:
        write_corpus(text_spec(tmp_path / "*"), char_tok, out)
    msg = one_line(info)
    assert str(bad) in msg
    assert f"byte offset {data.index(0xE9)} " in msg and "(line 1, byte e9)" in msg
    assert "iconv -f latin1 -t utf-8" in msg and "corpus.exclude" in msg
    assert "\ufffd" not in msg
    assert not out.exists() and not list(out.parent.glob("*"))  # nothing half-written
    # Listing the file under corpus.exclude is the documented way out: then the corpus builds.
    table = write_corpus(text_spec(tmp_path / "*", exclude=[str(bad)]), char_tok, out)
    assert out.is_file() and table.num_rows == 3


def test_non_utf8_gzip_corpus_file_names_the_decompressed_offset(tmp_path):
    bad = tmp_path / "jargon.txt.gz"
    data = b"x" * 1000 + "\u00e9t\u00e9".encode("cp1252")
    bad.write_bytes(gzip.compress(data))
    with pytest.raises(CorpusError) as info:
        list(iter_documents(text_spec(bad, fmt="plain")))
    msg = one_line(info)
    assert str(bad) in msg and "byte offset 1000 of the decompressed text" in msg
    assert "zcat" in msg and "iconv -f latin1 -t utf-8" in msg and "corpus.exclude" in msg


def test_truncated_gzip_corpus_file_is_refused(tmp_path):
    bad = tmp_path / "cut.txt.gz"
    bad.write_bytes(gzip.compress(b"some text " * 500)[:-30])
    with pytest.raises(CorpusError) as info:
        list(iter_documents(text_spec(bad, fmt="plain")))
    msg = one_line(info)
    assert str(bad) in msg and "cannot be read" in msg and "corpus.exclude" in msg


def test_jsonl_corpus_non_utf8_and_bad_json_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    first = json.dumps({"text": "fine"}).encode() + b"\n"
    path.write_bytes(first + b'{"text": "caf\xe9"}\n')
    spec = {"id": "j", "source": "jsonl", "paths": [str(tmp_path / "*.jsonl")]}
    with pytest.raises(CorpusError) as info:
        list(iter_documents(spec))
    msg = one_line(info)
    assert f"{path}:2:" in msg and f"byte offset {len(first) + 13} " in msg and "iconv" in msg
    path.write_bytes(first + b'{"text": "cut off')
    with pytest.raises(CorpusError) as info:
        list(iter_documents(spec))
    assert f"{path}:2: not valid JSON" in one_line(info)
    spec["paths"] = [str(tmp_path / "none*.jsonl")]
    with pytest.raises(CorpusError) as info:
        list(iter_documents(spec))
    assert "corpus.paths" in one_line(info) and "matched no files" in str(info.value)


# -- 2. the empty-corpus message names the real corpus id and config keys --------------------------------------------

def test_empty_corpus_names_corpus_id_and_real_keys(tmp_path):
    (tmp_path / "short").write_text("ab\n%\ncd\n", encoding="utf-8")
    spec = text_spec(tmp_path / "short", excerpt_tokens=64)
    with pytest.raises(CorpusError) as info:
        build_corpus(spec, char_tok)
    msg = one_line(info)
    assert "'tiny-corpus'" in msg and "'?'" not in msg
    assert "2 non-blank document(s)" in msg and "corpus.excerpt_tokens=64" in msg
    assert "corpus.files" in msg and "corpus.exclude" in msg
    assert "corpus.paths" not in msg  # a jsonl-only key; text_files corpora have no such key


# -- 3. corrupt Parquet and manifest files --------------------------------------------------------------------------

def _fake_activations(folder: Path, layers=(0, 1)) -> dict[int, Path]:
    folder.mkdir(parents=True)
    paths = {}
    for layer in layers:
        table = pa.table({"neuron": pa.array(np.arange(8, dtype=np.int32)),
                          "max_activation": pa.array(np.linspace(0, 1, 8, dtype=np.float32))})
        table = table.replace_schema_metadata({"autointerp.quantile_levels": "[0.5, 0.99]"})
        paths[layer] = folder / f"layer{layer:03d}.parquet"
        atomic_write_parquet(table, paths[layer])
    manifest = {"shards": {str(k): p.name for k, p in paths.items()}, "schema_version": "1"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return paths


def test_intact_activations_folder_reads(tmp_path):
    paths = _fake_activations(tmp_path / "activations")
    assert layer_shards(tmp_path / "activations") == {k: str(v) for k, v in paths.items()}
    assert quantile_index(paths[0], 0.99) == 1


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "deleted"])
def test_corrupt_activation_shard_names_file_and_rerun(tmp_path, damage):
    folder = tmp_path / "results" / "s" / "c" / "activations"
    paths = _fake_activations(folder)
    shard = paths[1]
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif damage == "garbage":
        shard.write_bytes(b"this is not parquet at all" * 10)
    elif damage == "empty":
        shard.write_bytes(b"")
    else:
        shard.unlink()
    with pytest.raises(ExtractionError) as info:
        layer_shards(folder)
    msg = one_line(info)
    assert str(shard) in msg
    assert f"delete the folder {folder} and rerun extraction (rules extract_shard, merge_activations)" in msg
    if damage != "deleted":
        # Readers given the shard path directly (records rule) say the same.
        with pytest.raises(ExtractionError) as info:
            build_records([(1, 0)], {1: str(shard)}, np.zeros((4, 4), dtype=np.int64), None)
        msg = one_line(info)
        assert str(shard) in msg and "rules extract_shard, merge_activations" in msg


@pytest.mark.parametrize("manifest_text, expected", [
    (None, "manifest.json is missing"),
    ('{"shards": {"0": "layer0', "manifest.json:1: not valid JSON"),
    ('{"schema_version": "1"}', "no 'shards' map"),
    ('{"shards": {"0": "layer000.parquet"}, "schema_version": "0"}', "schema_version '0'"),
])
def test_missing_or_corrupt_manifest(tmp_path, manifest_text, expected):
    folder = tmp_path / "activations"
    _fake_activations(folder)
    manifest = folder / "manifest.json"
    if manifest_text is None:
        manifest.unlink()
    else:
        manifest.write_text(manifest_text)
    with pytest.raises(ExtractionError) as info:
        layer_shards(folder)
    msg = one_line(info)
    assert expected in msg and str(folder) in msg and "rules extract_shard, merge_activations" in msg


def test_corrupt_records_and_corpus_parquet_name_the_rule(tmp_path):
    records = tmp_path / "results" / "s" / "c" / "records" / "random.parquet"
    corpus = tmp_path / "results" / "s" / "corpus" / "c.parquet"
    for path in (records, corpus):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"PAR1" + b"\x00" * 50)
    with pytest.raises(InputFileError) as info:
        load_records(records)
    msg = one_line(info)
    assert str(records) in msg and "not a readable Parquet file" in msg
    assert f"delete {records} and rerun the workflow (rule records writes it)" in msg
    with pytest.raises(InputFileError) as info:
        read_token_ids(corpus)
    assert "(rule build_corpus writes it)" in one_line(info)
    # A readable Parquet file of the wrong kind is refused too, not half-read.
    atomic_write_parquet(pa.table({"x": [1, 2]}), corpus)
    with pytest.raises(InputFileError) as info:
        read_token_ids(corpus)
    assert str(corpus) in one_line(info) and "excerpt_id" in str(info.value)


def test_parquet_with_damaged_data_pages_is_refused(tmp_path):
    path = tmp_path / "data.parquet"
    rng = np.random.default_rng(0)
    atomic_write_parquet(pa.table({"v": rng.standard_normal(50_000).astype(np.float32)}), path)
    data = bytearray(path.read_bytes())
    data[100:4000] = rng.integers(0, 256, 3900, dtype=np.uint8).tobytes()  # footer intact, pages broken
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError) as info:
        read_parquet(path)
    assert str(path) in one_line(info)


# -- 4. truncated or corrupt JSONL -----------------------------------------------------------------------------------

def test_truncated_jsonl_names_path_line_and_rule(tmp_path):
    path = tmp_path / "results" / "s" / "c" / "explanations" / "random" / "smollm2" / "Original.jsonl"
    path.parent.mkdir(parents=True)
    lines = [json.dumps({"layer": 0, "neuron": i, "explanation": "x" * 20}) for i in range(3)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [r["neuron"] for r in read_jsonl(path)] == [0, 1, 2]
    path.write_text("\n".join(lines)[:-9], encoding="utf-8")  # the last line is cut
    with pytest.raises(InputFileError) as info:
        read_jsonl(path)
    msg = one_line(info)
    assert msg.startswith(f"{path}:3: not valid JSON (")
    assert "the line is cut off: the file is truncated" in msg
    assert f"delete {path} and rerun the workflow (rule explain writes it)" in msg


def test_corrupt_jsonl_lines(tmp_path):
    path = tmp_path / "results" / "s" / "c" / "prompts" / "random" / "smollm2" / "Summary.jsonl"
    path.parent.mkdir(parents=True)
    first = b'{"a": 1}\n\n'
    path.write_bytes(first + b'{"a": "\xff"}\n')
    with pytest.raises(InputFileError) as info:
        read_jsonl(path)
    msg = one_line(info)
    assert f"{path}:3: not valid UTF-8 at byte offset {len(first) + 7}" in msg and "rule render_prompts" in msg
    path.write_bytes(first + b"[1, 2]\n")
    with pytest.raises(InputFileError) as info:
        read_jsonl(path)
    assert f"{path}:3: not a JSON object" in one_line(info)
    puzzles = tmp_path / "results" / "puzzles" / "generated" / "prompts" / "m" / "Original.jsonl"
    puzzles.parent.mkdir(parents=True)
    puzzles.write_text('{"a": tru', encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        read_jsonl(puzzles)
    assert "rule render_puzzle_prompts" in one_line(info)


# -- 5. API key variables ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, state", [(None, "is not set"), ("", "is set but empty"), ("  ", "is set but empty")])
def test_missing_api_key_names_variable_never_value(monkeypatch, value, state):
    var = "AUTOINTERP_TEST_KEY"
    if value is None:
        monkeypatch.delenv(var, raising=False)
    else:
        monkeypatch.setenv(var, value)
    cfg = RoleConfig.from_dict("simulator", {"model": "gpt-x", "base_url": "https://llm.example.invalid/v1",
                                             "api_key_env": var})
    with pytest.raises(LLMConfigError) as info:
        cfg.resolve_api_key()
    msg = one_line(info)
    assert f"{var} {state}" in msg and f"export {var}=<your key>" in msg and "api_key_env" in msg
    assert "'simulator'" in msg and "gpt-x" in msg
    monkeypatch.setenv(var, "sk-secret-value")
    assert cfg.resolve_api_key() == "sk-secret-value"


def test_remote_role_without_api_key_env(monkeypatch):
    cfg = RoleConfig.from_dict("explainer", {"model": "m", "base_url": "https://llm.example.invalid/v1",
                                             "api_key_env": None})
    with pytest.raises(LLMConfigError) as info:
        cfg.resolve_api_key()
    assert "api_key_env is null" in one_line(info)


# -- end to end: one line on stderr, exit 1 ----------------------------------------------------------------------------

def test_rule_context_prints_one_line_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "latin"
    bad.write_bytes(LATIN1_TEXT.encode("latin-1"))
    out = tmp_path / "results" / "corpus.parquet"
    fake = SimpleNamespace(log=[str(tmp_path / "logs" / "build_corpus.log")], rule="build_corpus")
    with pytest.raises(SystemExit) as info:
        with rule_context(fake):
            write_corpus(text_spec(bad), char_tok, out)
    assert info.value.code == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"autointerp error in rule build_corpus: corpus file {bad}: not valid UTF-8 at byte")
    assert "Traceback" not in err and not out.exists()
    assert "not valid UTF-8" in Path(fake.log[0]).read_text(encoding="utf-8")


def test_every_bad_input_error_class_is_known():
    for cls in (CorpusError, ExtractionError, InputFileError, LLMConfigError):
        assert issubclass(cls, autointerp.known_errors()), cls
