"""The paper's released files (Lee et al. 2023, Trustworthy-ML-Lab/Efficient-LLM-automated-interpretability at a
pinned commit): explanation CSVs per neuron set and explainer, the NeuronViewer explanations of the random
interpretable neurons, and the Neuron Puzzles file. A config names them (``{released: <name>}``); rule
``released_file`` copies the file into ``data/released/`` from ``released_dir`` (a local copy, e.g. a checkout
or ``../shared/reference-data``) or downloads it once, and either way only bytes with the pinned SHA-256 are
used.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from autointerp.common.io import atomic_path
from autointerp.common.pinned import fetch_pinned, sha256_of

REPO = "Trustworthy-ML-Lab/Efficient-LLM-automated-interpretability"
COMMIT = "d0719aa0bc047815fb59df4ca561260e64e33fa3"
FOLDER = "data/released"  # where the workflow keeps the checked copies (shared by every run)

# name -> (path in the repository, sha256). The git blob ids match ../shared/reference-data/MANIFEST.txt.
FILES = {
    "neurons_to_evaluate.csv": ("Experiments/inputs/neurons_to_evaluate.csv",
                                "cfa7c43fc9d0da0e248ba5ca845a889fe73b101c5656f8140945697f2646f50a"),
    "test_neurons.csv": ("Experiments/inputs/test_neurons.csv",
                         "f2b06a43e003ec35d34f63215caffb0097d684cde7dbd4f69ba8688b1f363d00"),
    "random_GPT35_results.csv": ("Experiments/results/random_GPT35_results.csv",
                                 "76f839050ae1d3981ad5d8def4e93e3d043e7a97f28dda8d58948801db3fc478"),
    "random_GPT4_results.csv": ("Experiments/results/random_GPT4_results.csv",
                                "7d608f9846a27b2b4b0fc54201f580bc8ead9d2f67f9b997a3972b8027f70c05"),
    "random_interpretable_GPT35_results.csv": ("Experiments/results/random_interpretable_GPT35_results.csv",
                                               "c2e399250ffa54503aabb9b0044b2e58ad3df79dd975210d828455df9c3bc0ce"),
    "random_interpretable_GPT4_results.csv": ("Experiments/results/random_interpretable_GPT4_results.csv",
                                              "abb015ad854372b705b130328b25935b3ca152cf5bda63d21852c4a18c69ae19"),
    "top20_GPT35_results.csv": ("Experiments/results/top20_GPT35_results.csv",
                                "e49032ec073fedc900c8a607afbe37aaa5bc32ec695b55f02a561bf1e29d95df"),
    "Top1k_GPT35_results.csv": ("Experiments/results/Top1k_GPT35_results.csv",
                                "366474c8c161b201aae726e3482b570b3b86646f9c2ddde426026410c2613fc4"),
    "puzzles_GPT35_results.csv": ("Experiments/results/puzzles_GPT35_results.csv",
                                  "2ec42ee2d2bac320f45f94386acdd92cf0aae769b76141f91ec2e3048617b05a"),
    "puzzles_GPT4_results.csv": ("Experiments/results/puzzles_GPT4_results.csv",
                                 "ee76f889772bb49c45e911ffecee6780a97b76b58506cfd95fa9fbb5189965e6"),
    "test_neurons_results.csv": ("Experiments/test_results/test_neurons_results.csv",
                                 "ecd4a06dc86ed92563cdd12ec13cafcab9b3b50001b1d2f73879b722de8b1a2b"),
    "test_neurons_results_adaCS.csv": ("Experiments/test_results/test_neurons_results_adaCS.csv",
                                       "8d51034b03d05d8876ba2e529612ed7b791717952a05562cdfd76bea832468d9"),
    "puzzles.json": ("neuron-explainer/neuron_explainer/explanations/puzzles.json",
                     "4236e8a4207886b6053376a261ac909e7ccb8fa1d8aeaf699521c7f42253af07"),
}


class ReleasedFileError(ValueError):
    """A released file is unknown, or could not be had with its pinned bytes; the message says how to fix it."""


def url(name: str) -> str:
    return f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/{FILES[name][0]}"


def _download(address: str, timeout: float) -> bytes:
    with urllib.request.urlopen(address, timeout=timeout) as resp:  # noqa: S310 - a fixed https URL
        return resp.read()


def check_name(name: str) -> str:
    if name not in FILES:
        raise ReleasedFileError(f"unknown released file {name!r}; known: {', '.join(sorted(FILES))}")
    return name


def released_path(name: str) -> str:
    """Where the workflow keeps the checked copy of ``name`` (a rule output)."""
    return f"{FOLDER}/{check_name(name)}"


def fetch_released(name: str, target, local_dir: str | None = None) -> dict:
    """Put the pinned bytes of ``name`` at ``target``: from ``local_dir`` when it holds the file, else downloaded
    (never offline). A local copy with other bytes is refused, not used."""
    repo_path, expected = FILES[check_name(name)]
    target = Path(target)
    hint = (f"set released_dir to a folder holding {name} (a checkout's {repo_path}, or ../shared/reference-data), "
            f"e.g. --config released_dir=../shared/reference-data, or download {url(name)} into it")
    if local_dir:
        local = Path(local_dir) / name
        if local.is_file():
            got = sha256_of(local)
            if got != expected:
                raise ReleasedFileError(f"{local}: sha256 {got} is not the pinned {expected} of {REPO}@{COMMIT[:8]} "
                                        f"{repo_path}; use an unmodified copy")
            with atomic_path(target) as tmp:
                shutil.copyfile(local, tmp)
            return {"file": name, "from": str(local), "sha256": expected}
    fetch_pinned(url(name), expected, target, hint=hint, download=_download, fetch_error=ReleasedFileError,
                 checksum_error=ReleasedFileError, what=f"the released file {name}")
    return {"file": name, "from": url(name), "sha256": expected}
