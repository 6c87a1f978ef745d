"""Torch threads follow the CPUs a job may use: its affinity mask and, inside a SLURM job, its allocation."""

from __future__ import annotations

import os

import pytest

from autointerp.common.snakemake_io import allowed_cpus, usable_threads

SLURM_VARS = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")


@pytest.fixture
def mask(monkeypatch):
    """Pretend the affinity mask holds ``n`` CPUs; no SLURM variables unless a test sets them."""
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)

    def set_mask(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)

    return set_mask


def test_the_affinity_mask_bounds_threads_not_the_core_count(mask, monkeypatch):
    mask(3)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert allowed_cpus() == 3
    assert usable_threads(8) == 3 and usable_threads(2) == 2
    assert usable_threads(None) == usable_threads(0) == 1


def test_a_slurm_allocation_bounds_threads(mask, monkeypatch):
    mask(16)  # task/none or no cgroups: the whole node is in the mask
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "4")
    assert usable_threads(8) == 4
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")  # the task's share wins over the node's allocation
    assert usable_threads(8) == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "32")  # never more than the mask
    assert usable_threads(64) == 16


def test_unusable_slurm_values_are_ignored(mask, monkeypatch):
    mask(6)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "2(x3)")  # not a plain count
    assert usable_threads(8) == 6


def test_without_sched_getaffinity_the_core_count_is_used(monkeypatch):
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert usable_threads(8) == 5
