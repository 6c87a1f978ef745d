"""The presets as a user meets them: every command in their headers runs as written (as a dry run, without any
key), and the openai_compatible preset runs end to end against the project's engine started as a standalone
OpenAI-compatible server, in both simulator modes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from workflow_utils import ROOT, make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow

PRESETS = sorted((ROOT / "config" / "presets").glob("*.yaml"))


def header_commands(path) -> list[list[str]]:
    """The ``snakemake ...`` command lines of a preset's header comment."""
    commands = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        for text in re.findall(r"(?:^#\s+|: )(snakemake .+?)\)?$", line):
            commands.append(shlex.split(text))
    return commands


def test_every_preset_documents_its_commands():
    for path in PRESETS:
        commands = header_commands(path)
        assert len(commands) >= 3, path
        run = path.stem  # the run is named after the file: its tables are asked for under results/<run>/
        assert any(f"results/{run}/table6.csv" in c for c in commands), (path, commands)
        assert not yaml.safe_load(path.read_text()).get("run"), path  # so that a copy is another run


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_header_commands_run_as_written(preset, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    work = make_workdir(tmp_path, yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    commands = header_commands(preset)
    assert all(command[0] == "snakemake" for command in commands)

    def dry_run(command):
        args = command[1:] if "-n" in command else ["-n", *command[1:]]
        return snakemake(work, *args, without=("OPENAI_API_KEY",), timeout=600)

    with ThreadPoolExecutor(len(commands)) as pool:  # dry runs take no lock: side by side in one folder
        for command, proc in zip(commands, pool.map(dry_run, commands)):
            assert proc.returncode == 0, (command, (proc.stdout + proc.stderr)[-3000:])
            assert "Job stats" in proc.stdout + proc.stderr or "Nothing to be done" in proc.stdout + proc.stderr


@pytest.fixture
def standalone_engine(embedded_model_dir, tmp_path):
    """``python -m autointerp.engine`` as the preset's header starts it, on a free port."""
    ready = tmp_path / "engine.url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "autointerp.engine", "--model-dir", str(embedded_model_dir / "hf"), "--model-name",
         "smollm2-135m-instruct", "--port", "0", "--number-aware-logprobs", "--threads", "1",
         "--ready-file", str(ready)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the engine did not start"
            time.sleep(0.2)
        yield ready.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_openai_compatible_preset_round_trip(standalone_engine, embedded_model_dir, tmp_path):
    """The preset as a user would copy it: its LLM roles unchanged but for the server's address, data shrunk to
    test size; explain and simulate run against the standalone server; tables land in the run's folder. A copy in
    chat_logprobs mode scores one format through the same server (the rest of its run is the same jobs again)."""
    preset = yaml.safe_load((ROOT / "config" / "presets" / "openai_compatible.yaml").read_text())
    small = tiny_config()
    preset.update(subject={**small["subject"], "layers": [0]},
                  corpus={**small["corpus"], "n_excerpts": 80, "excerpt_tokens": 8},
                  records={"n_examples_per_split": 1, "cutoff_quantile": 0.99},
                  neuron_sets={"rnd": {"kind": "random", "total": 1, "seed": 0}},
                  prompt_formats={"Original": {}, "Summary": {}})
    base_url = standalone_engine.rstrip("/") + ("" if standalone_engine.rstrip("/").endswith("/v1") else "/v1")
    for role in (*preset["explainers"].values(), *preset["simulators"].values(), *preset["scorers"].values()):
        assert role["base_url"] == "http://127.0.0.1:8000/v1" and role["provider"] == "openai"
        role["base_url"] = base_url
    work = make_workdir(tmp_path, small, embedded_model_dir)
    chat = yaml.safe_load(yaml.safe_dump(preset))
    chat["simulators"]["remote"]["mode"] = "chat_logprobs"
    (work / "config" / "openai_compatible.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    (work / "config" / "openai_compatible_chat.yaml").write_text(yaml.safe_dump(chat, sort_keys=False))
    target = "results/openai_compatible_chat/smol/pydocs/scores/rnd/remote/remote/Original.parquet"
    proc = snakemake(work, "--cores", "2", target, "--configfile", "config/openai_compatible_chat.yaml")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    scores = pq.read_table(work / target).to_pylist()
    assert len(scores) == 1 and scores[0]["n_sequences"] == 2, scores
    usage = work / target.replace("/scores/", "/usage/simulate/").replace(".parquet", ".json")
    assert '"requests": 2' in usage.read_text()  # chat-mode simulations really reached the server
    run = "openai_compatible"
    proc = snakemake(work, "--cores", "2", f"results/{run}/table6.csv", "--configfile", f"config/{run}.yaml",
                     timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    results = work / "results" / run
    assert (results / "table6.csv").exists() and (results / "table2.csv").exists()
    for fmt in ("Original", "Summary"):
        scores = pq.read_table(results / "smol" / "pydocs" / "scores" / "rnd" / "remote" / "remote"
                               / f"{fmt}.parquet").to_pylist()
        assert len(scores) == 1 and scores[0]["n_sequences"] == 2, scores  # 1 top + 1 random valid record
        usage = (results / "smol" / "pydocs" / "usage" / "simulate" / "rnd" / "remote" / "remote" / f"{fmt}.json")
        assert '"requests": 2' in usage.read_text()  # the calls really reached the standalone server
    assert "simulate_score rnd/remote/remote/Original: 1/1 explanations scored" in out
    for kind in ("detection", "fuzzing"):  # the scorers through the same server: one request per explanation
        usage = results / "smol" / "pydocs" / "usage" / kind / "rnd" / "remote" / "remote" / "Summary.json"
        assert '"requests": 1' in usage.read_text() and f"classify {kind}/rnd/remote/remote/Summary: 1/1" in out
    assert {f"{k}[remote/remote/rnd]" for k in ("detection", "fuzzing")} <= set(
        (results / "table6.csv").read_text().splitlines()[0].split(","))
    assert not (work / "results" / "table6.csv").exists()  # neither run wrote the default run's tables


def test_every_gpt2xl_neuron_plans_offline_with_jobs_cost_and_disk(tmp_path):
    """The paper preset with a set of all 307,200 GPT-2 XL neurons dry-runs with no weights, data or key: the
    model's shape is shipped, chunks are per layer, and the plan names neurons, cost and disk."""
    preset = yaml.safe_load((ROOT / "config" / "presets" / "paper_gpt2xl.yaml").read_text())
    preset["neuron_sets"] = {"all": {"kind": "all"}}
    work = make_workdir(tmp_path, yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    (work / "config" / "gpt2xl_all.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    proc = snakemake(work, "-n", "results/gpt2xl_all/table6.csv", "--configfile", "config/gpt2xl_all.yaml",
                     without=("OPENAI_API_KEY",))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not (work / "data" / "models" / "gpt2-xl").exists()
    assert "plan: 307,200 neurons (all 307,200)" in out
    explain_calls = 307_200 * len(preset["prompt_formats"])  # per explainer, one sample each
    assert "explain gpt-4 $" in out and f"({explain_calls:,} calls)" in out
    assert "plan: disk shard states" in out and "merged activations" in out
    stats = out.split("Job stats:")[1]
    counts = {p[0]: int(p[1]) for p in (line.split() for line in stats.splitlines()) if len(p) == 2 and p[1].isdigit()}
    n_formats = len(preset["prompt_formats"])
    assert counts["records"] == 48 and counts["extract_shard"] == preset["extraction"]["shards"]
    assert counts["explain"] == 48 * n_formats * len(preset["explainers"]), counts
    assert counts["simulate_score"] == 48 * n_formats * len(preset["explainers"]) * len(preset["simulators"])
    assert counts["merge_activations"] == 48 // preset["extraction"]["layers_per_merge"]


@pytest.mark.parametrize("overlay", [[], ["config/presets/paper_released_ada.yaml"]], ids=["minilm", "ada"])
def test_released_explanations_plan_no_model_and_no_extraction(overlay, tmp_path):
    """The paper's released explanations need neither GPT-2 XL nor its activations, even when a priced embedder
    (ada-002) makes the cost estimate run before the paid calls."""
    work = make_workdir(tmp_path, yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    run = "paper_released_ada" if overlay else "paper_released"
    proc = snakemake(work, "-n", f"results/{run}/table6.csv", "--configfile", "config/presets/paper_released.yaml",
                     *overlay, without=("OPENAI_API_KEY",))
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _job_counts(proc.stdout + proc.stderr)
    assert jobs["import_explanations"] == 30 and jobs["adacs_similarity"] == 10
    assert not {"prepare_model", "build_corpus", "extract_shard", "records", "render_prompts", "explain"} & set(jobs)
    assert ("cost_estimate" in jobs) == bool(overlay)  # only a priced role waits for the estimate


def _job_counts(text: str) -> dict[str, int]:
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
