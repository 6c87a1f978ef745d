"""Run the real Snakefile on a tiny config in a scratch copy of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "src"]


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
    """Explainer and simulator on the loopback test server; the key comes from a planted env var. ``prices``
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
