# Shared helpers (config validation, paths and input functions), included before the other files.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from autointerp.config import validate_config  # noqa: E402

validate_config(config, Path(workflow.basedir) / "config" / "config.schema.yaml")

SUBJECT = config["subject"]["id"]
CORPUS = config["corpus"]["id"]
NEURON_SETS = sorted(config["neuron_sets"])
RUN = f"results/{SUBJECT}/{CORPUS}"



def subject_hook(wildcards):
    # A function, so that the "{layer}" placeholder is not taken for a wildcard.
    return config["subject"]["hook"]


def model_dir(wildcards=None):
    return f"data/models/{SUBJECT}"


def corpus_path(wildcards=None):
    return f"results/{SUBJECT}/corpus/{CORPUS}.parquet"


def activations_dir(wildcards=None):
    return f"{RUN}/activations"


def neuron_set_spec(wildcards):
    """One neuron set's own config entry (not the whole config: editing one set reruns only its jobs)."""
    return config["neuron_sets"][wildcards.neuron_set]


def neuron_set_inputs(wildcards):
    spec = config["neuron_sets"][wildcards.neuron_set]
    inputs = {"activations": activations_dir()}
    if spec["kind"] == "csv":
        inputs["csv"] = spec["path"]
    return inputs


def all_targets():
    return expand(f"{RUN}/records/{{neuron_set}}.parquet", neuron_set=NEURON_SETS)
