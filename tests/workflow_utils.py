"""Run the real Snakefile on a tiny config in a scratch copy of the repository."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "src", "report"]


def make_workdir(tmp: Path, config: dict, prepared_model: Path | None = None) -> Path:
    work = tmp / "wf"
    work.mkdir()
    for name in COPIED:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if prepared_model is not None:
        link_tree(prepared_model, work / "data" / "models" / config["subject"]["id"])
    return work


def link_tree(src: Path, dst: Path) -> None:
    """A copy of a prepared model whose files are hard links (the runs only read them): 540 MB not copied per test."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


def copy_run(src: Path, dst: Path) -> None:
    """A finished run copied for a test that changes it: its prepared model linked, everything else copied."""
    models = src / "data" / "models"
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: ["models"] if Path(d) == models.parent else [])
    if models.is_dir():
        for model in models.iterdir():
            link_tree(model, dst / "data" / "models" / model.name)


PLANTED_KEY = "sk-planted-SECRET-4f1c9e"


def snakemake(work: Path, *args: str, timeout: int = 900, without: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m snakemake *args`` in ``work``, with the planted key (unless listed in ``without``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "AUTOINTERP_TEST_KEY": PLANTED_KEY}
    for name in without:
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)


def loopback_roles(base_url: str, **prices: float) -> dict:
    """Explainer, simulator and scorer on the loopback test server; the key comes from a planted env var. ``prices``
    (price_input_per_1m, price_output_per_1m) make every role a priced one."""
    role = {"provider": "openai", "model": "loop-model", "base_url": base_url, "api_key_env": "AUTOINTERP_TEST_KEY",
            "context_length": 8192, "concurrency": 8, **prices}
    shared = ROOT.parent / "shared" / "reference-data" / "puzzles.json"
    puzzle_sets = {"gen": {"source": "generated", "rules": ["of", "quotes", "negation"], "sentences_per_puzzle": 6}}
    if shared.exists():  # the official puzzles, given as a file (CI has ../shared)
        puzzle_sets["official"] = {"source": "file", "path": str(shared), "names": ["colors", "of", "million"]}
    return {
        "explainers": {"loop": dict(role),
                       "loopref": {**role, "role": "reference", "formats": ["Original"], "temperature": 0.0}},
        "simulators": {"loop": {**role, "mode": "prompt_logprobs"}},
        # tests/fake_scorer.py answers a "-perfect" model from the run's records (both kinds; one set keeps it short)
        "scorers": {"perfect": {**role, "model": "loop-perfect", "neuron_sets": ["rnd"]}},
        "embedders": {"loopemb": {**role, "model": "loop-embed"}},
        "adacs": {"embedder": "loopemb", "references": {"rnd": {"kind": "explainer", "explainer": "loopref"}}},
        "puzzles": {"embedder": "loopemb", "samples": 2, "sets": puzzle_sets},
        "n2g": {"enabled": True, "augmentation": False},
    }


def tiny_config(**overrides) -> dict:
    config = {
        "subject": {"id": "smol", "model": "embedded:smollm2-135m-instruct", "layers": [0, 29], "batch_size": 16},
        "corpus": {"id": "pydocs", "source": "python_docs", "n_excerpts": 120, "excerpt_tokens": 32},
        "extraction": {"top_k": 20, "random_n": 50},
        "neuron_sets": {"rnd": {"kind": "random", "total": 3}, "top": {"kind": "top", "per_layer": 1}},
        "prompt_formats": {"Original": {}, "Summary": {}, "Highlight": {}, "HighlightSummary": {}, "AVHS": {}},
        "explainers": {"smollm2": {"provider": "local", "model": "smollm2-135m-instruct", "context_length": 8192}},
        "llm": {"cache_dir": ".cache/llm"},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def validated(config: dict) -> dict:
    """A config as the workflow sees it: validated against the schema, defaults filled in."""
    import copy

    from autointerp.common.config import validate_config

    config = copy.deepcopy(config)
    validate_config(config, ROOT / "config" / "config.schema.yaml")
    return config


def rule_io(inputs: dict, outputs: dict, *, threads: int = 1, **wildcards):
    """The RuleIO a script would build for a job with these named inputs/outputs."""
    from autointerp.common.snakemake_io import RuleIO

    flat = lambda d: [str(x) for v in d.values() for x in (v if isinstance(v, list) else [v])]  # noqa: E731
    return RuleIO(rule="test", input={k: v if isinstance(v, list) else str(v) for k, v in inputs.items()},
                  output={k: str(v) for k, v in outputs.items()}, inputs=flat(inputs), outputs=flat(outputs),
                  wildcards=dict(wildcards), threads=threads)


# --- every written column documented ---------------------------------------------------------------------------

# Placeholders a documented name may contain; each stands for one name (a neuron set, a role, a puzzle set).
DOC_PLACEHOLDERS = ("set", "puzzle_set", "explainer", "simulator", "scorer")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(DOC_PLACEHOLDERS) + r")\}")
_ONE_NAME = r"[^/\[\]\s]+?"


def documented_names(docs_dir: Path) -> set[str]:
    """Every backticked name in the first cell of a markdown table row (a line starting with "| `") in
    ``docs_dir/*.md``: the column, key or file a row documents."""
    names: set[str] = set()
    for md in sorted(Path(docs_dir).glob("*.md")):
        for line in md.read_text(encoding="utf-8").splitlines():
            if line.startswith("| `"):
                names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def _name_pattern(name: str) -> re.Pattern:
    parts = _PLACEHOLDER.split(name)  # text, placeholder, text, ...
    return re.compile("".join(_ONE_NAME if i % 2 else re.escape(part) for i, part in enumerate(parts)))


def written_columns(results_dir: Path) -> dict[str, list[str]]:
    """{file relative to ``results_dir``: the names it writes}: CSV headers, Parquet schema names, the keys of the
    first line of each explanations (and failures) JSONL file, and in each usage JSON file its top-level keys, the
    keys of ``totals`` and those of one call record."""
    import pyarrow.parquet as pq

    results_dir = Path(results_dir)
    out: dict[str, list[str]] = {}
    for path in sorted(p for p in results_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(results_dir)
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
            # a csv neuron set keeps its source file's other columns as they are (documented as pass-through)
            out[str(rel)] = header[:2] if "neuron_sets" in rel.parts else header
        elif path.suffix == ".parquet":
            out[str(rel)] = pq.read_schema(path).names
        elif path.suffix == ".jsonl" and "explanations" in rel.parts:
            with open(path, encoding="utf-8") as fh:
                first = next((line for line in fh if line.strip()), None)
            out[str(rel)] = list(json.loads(first)) if first else []
        elif path.suffix == ".json" and "usage" in rel.parts:
            usage = json.loads(path.read_text(encoding="utf-8"))
            calls = usage.get("calls") or [{}]
            out[str(rel)] = [*usage, *usage.get("totals", {}), *calls[0]]
    return out


def undocumented_columns(results_dir: Path, docs_dir: Path) -> dict[str, list[str]]:
    """{column: up to 3 files that write it} for every written name (``written_columns``) that no first cell of a
    docs table documents (``documented_names``; ``{set}``, ``{puzzle_set}``, ``{explainer}`` and ``{simulator}``
    in a documented name match any one name). Empty when everything written is documented."""
    patterns = [_name_pattern(name) for name in documented_names(docs_dir)]
    missing: dict[str, set[str]] = {}
    for rel, names in written_columns(results_dir).items():
        for name in names:
            if not any(p.fullmatch(name) for p in patterns):
                missing.setdefault(name, set()).add(rel)
    return {name: sorted(files)[:3] for name, files in sorted(missing.items())}
