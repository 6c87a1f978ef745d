"""The workflow through a real SLURM cluster: tools/slurm_local_cluster.sh starts a single-node cluster (no
accounting, a fake GPU), and a tiny run goes through `--profile profiles/slurm` with the no-accounting switch.
Needs root and apt-get (the script installs munge and SLURM); skips otherwise, which CI (root) turns into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime

import pytest

from fake_simulator import simulators_script
from loopback_server import LoopbackServer
from workflow_utils import ROOT, make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tools" / "slurm_local_cluster.sh"
# What a site without accounting adds (docs/cluster.md); the rest adapts the profile to this 2-CPU node and test:
# the extraction's CPUs (its threads) to the node, API jobs one at a time (so their throttling is observable),
# status polls from 5 s and every 3 s (the plugin's 40 s and Snakemake's 10 s would double the run) and --verbose
# for the plugin's sbatch lines.
NO_ACCOUNTING = ("--slurm-status-command", "squeue")
SITE = ("--set-threads", "extract_shard=2", "--resources", "api_calls=1", "local_engine=2",
        "--slurm-init-seconds-before-status-checks", "5", "--seconds-between-status-checks", "3", "--verbose")
API_RULES = {"explain", "simulate_score"}


def _local_rules() -> set[str]:
    text = (ROOT / "rules" / "common.smk").read_text()
    block = re.search(r"^localrules:\n((?:    \w+,\n)+)", text, re.M)
    return {name.strip(" ,") for name in block.group(1).splitlines()}


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("needs root: tools/slurm_local_cluster.sh installs munge/SLURM and starts their daemons")
    if not shutil.which("sinfo") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    was_up = bool(shutil.which("scontrol")) and "is UP" in subprocess.run(["scontrol", "ping"], capture_output=True,
                                                                           text=True).stdout
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"no local SLURM cluster: {(proc.stderr or proc.stdout).strip()[-500:]}")
    assert "ready" in proc.stdout, proc.stdout
    yield
    if not was_up:  # leave the machine as found: stop only what this test started
        subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=120)


def _job(job_id: str) -> dict[str, str]:
    """``scontrol show job -d`` as a dict (finished jobs stay visible for MinJobAge = 600 s)."""
    proc = subprocess.run(["scontrol", "-o", "-d", "show", "job", job_id], capture_output=True, text=True)
    assert proc.returncode == 0, f"job {job_id} is gone (finished over MinJobAge = 600 s ago?): {proc.stderr}"
    return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory, embedded_model_dir):
    # API roles on a loopback server (the node is this machine): the test is about SLURM, and an embedded engine
    # loaded in each API job would double the run's time.
    with LoopbackServer(script=simulators_script) as server:
        yield _run(tmp_path_factory, embedded_model_dir, server)


def _run(tmp_path_factory, embedded_model_dir, server):
    role = {"provider": "openai", "model": "loop-model", "base_url": server.base_url, "api_key_env": None,
            "context_length": 8192}
    config = tiny_config(
        subject={"id": "smol", "model": "embedded:smollm2-135m-instruct", "layers": [0], "batch_size": 16},
        corpus={"id": "pydocs", "source": "python_docs", "n_excerpts": 60, "excerpt_tokens": 16},
        records={"n_examples_per_split": 2},
        neuron_sets={"rnd": {"kind": "random", "total": 1, "seed": 1}},
        prompt_formats={"Original": {}, "Summary": {}},
        explainers={"loop": role},
        simulators={"loop": {**role, "mode": "prompt_logprobs"}},
    )
    work = make_workdir(tmp_path_factory.mktemp("slurm"), config, embedded_model_dir)
    proc = snakemake(work, "--profile", "profiles/slurm", *NO_ACCOUNTING, *SITE, "results/table6.csv", timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # "Job 7 has been submitted with SLURM jobid 3 (log: .../slurm_logs/rule_extract_shard/...)"
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", out)
    return work, out, [(rule, _job(job_id)) for job_id, rule in submitted]


def test_the_tables_are_written(run):
    work, _, _ = run
    for name in ("table1.csv", "cost_estimate.csv", "table2.csv", "table6.csv"):
        lines = (work / "results" / name).read_text().splitlines()
        assert len(lines) >= 2, (name, lines)  # a header and rows


def test_heavy_jobs_went_through_sbatch_and_local_rules_did_not(run):
    _, out, jobs = run
    rules = [rule for rule, _ in jobs]
    assert sorted(rules) == ["explain", "explain", "extract_shard", "merge_activations", "records", "simulate_score",
                             "simulate_score"]
    for rule, job in jobs:
        assert job["JobState"] == "COMPLETED" and job["Comment"].startswith(f"rule_{rule}"), job
    local = _local_rules()
    ran_locally = set(re.findall(r"^localrule (\w+):", out, re.M))
    expected = {"build_corpus", "neuron_set", "render_prompts", "cost_estimate", "table1", "table2", "table6"}
    assert expected <= ran_locally
    assert ran_locally <= local and not local & set(rules)


def test_the_extraction_got_the_gpu_and_its_cpus(run):
    _, out, jobs = run
    [job] = [job for rule, job in jobs if rule == "extract_shard"]
    assert job["Partition"] == "gpu" and job["JOB_GRES"] == "gpu:1", job
    assert job["NumCPUs"] == "2" and job["MinMemoryNode"] == "16000M", job  # threads -> CPUs; the rule's mem_mb
    [sbatch] = [line for line in out.splitlines() if "sbatch call:" in line and "rule_extract_shard" in line]
    assert "--gpus=1" in sbatch and "--cpus-per-task=2" in sbatch and "-p gpu" in sbatch, sbatch
    other = [job for rule, job in jobs if rule != "extract_shard"]
    assert all(job["Partition"] == "cpu" and job.get("JOB_GRES") in (None, "(null)") for job in other), other


def test_api_jobs_were_throttled_by_the_global_resource(run):
    # --resources api_calls=1: two explain jobs (and two simulate jobs) were ready together, the node has room for
    # two 1-CPU jobs, yet no two API jobs ever ran at the same time.
    _, _, jobs = run
    spans = sorted((datetime.fromisoformat(job["StartTime"]), datetime.fromisoformat(job["EndTime"]))
                   for rule, job in jobs if rule in API_RULES)
    assert len(spans) == 4
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_jobs_were_not_capped_at_the_submit_host_cores(run):
    # profiles/default (applied too, winning key by key) sets no cores: `cores: all` there capped every job's
    # threads at this host's cores and told each job --cores <that number> (tests/test_profiles.py).
    _, out, jobs = run
    sbatch = [line for line in out.splitlines() if "sbatch call:" in line]
    assert len(sbatch) == len(jobs) and all("--cores 'all'" in line for line in sbatch), sbatch
