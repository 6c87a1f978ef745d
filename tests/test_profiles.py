"""What a cluster run gets from the profiles once Snakemake merged them, and which rules it submits. profiles/default
is the workflow profile: Snakemake applies it to every run and it wins over --profile key by key, so it must hold
nothing that hurts a cluster run. The run itself through SLURM: tests/test_slurm_cluster.py."""

from __future__ import annotations

import pytest

from workflow_utils import make_workdir, tiny_config

# Every rule is either local (rules/common.smk `localrules`) or submitted: a new rule must be placed here.
SUBMITTED = {"extract_shard", "merge_activations", "records", "explain", "simulate_score", "classify", "adacs_similarity",
             "puzzle_similarity",
             "explain_puzzles", "n2g"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("profiles"), tiny_config())


def _args(work, monkeypatch, *argv):
    from snakemake.cli import parse_args

    monkeypatch.chdir(work)  # profiles/default is found next to the Snakefile
    return parse_args(list(argv))[1]


def raw(resources) -> dict:
    return {name: res.raw for name, res in resources.items()}


def test_a_cluster_run_inherits_no_laptop_limits(work, monkeypatch):
    args = _args(work, monkeypatch, "--profile", "profiles/slurm")
    assert args.executor == "slurm" and args.jobs == 50
    # No cores: `cores: all` would cap every job's threads (and the jobs' --cores) at the submit host's cores.
    assert args.cores is None
    assert raw(args.resources) == {"api_calls": 4, "local_engine": 2}  # lanes are scoped local (see below)
    # cpus_per_task in default-resources would replace every rule's threads as the job's CPUs
    assert "cpus_per_task" not in args.default_resources and raw(args.default_resources)["mem_mb"] <= 16000
    assert raw(args.set_resources["extract_shard"]) == {"slurm_partition": "gpu", "gpu": 1}
    assert args.set_threads == {}


def test_local_runs_keep_their_limits(work, monkeypatch):
    args = _args(work, monkeypatch, "--cores", "2")
    assert args.executor is None and args.cores == 2
    assert raw(args.resources) == {"api_calls": 4, "local_engine": 2}


def test_cheap_rules_are_local_and_lanes_count_only_on_the_submit_host(work, monkeypatch):
    from pathlib import Path

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    monkeypatch.chdir(work)
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                                workdir=Path("."))._workflow
        rules = {rule.name: rule for rule in workflow.rules if rule.name != "all"}
        local = set(workflow._localrules)  # (workflow.is_local() is True for every rule in a local run)
        assert local == set(rules) - SUBMITTED, "place every rule: local (rules/common.smk) or SUBMITTED here"
        assert {"prepare_model", "build_corpus", "neuron_set", "render_prompts", "cost_estimate", "table6"} <= local
        # Lanes are the submit host's CPUs: a global scope would let profiles/default's 2 lanes throttle the cluster
        assert workflow.resource_scopes.is_local("local_engine")
        assert not workflow.resource_scopes.is_local("api_calls")  # API calls are throttled cluster-wide
