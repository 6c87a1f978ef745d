# Shared helpers (config validation, paths and input functions), included before the other files.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import re  # noqa: E402

from autointerp.config import validate_config  # noqa: E402
from autointerp.prompt_rendering import resolve_format  # noqa: E402

validate_config(config, Path(workflow.basedir) / "config" / "config.schema.yaml")
for _name, _spec in config["prompt_formats"].items():
    resolve_format(_name, _spec)  # unknown formats / bad variant fields fail at start-up

SUBJECT = config["subject"]["id"]
CORPUS = config["corpus"]["id"]
NEURON_SETS = sorted(config["neuron_sets"])
FORMATS = sorted(config["prompt_formats"])
EXPLAINERS = sorted(config["explainers"])
SIMULATORS = sorted(config.get("simulators") or {})
RUN = f"results/{SUBJECT}/{CORPUS}"



def subject_hook(wildcards):
    # A function, so that the "{layer}" placeholder is not taken for a wildcard.
    return config["subject"]["hook"]


EMBEDDED = "embedded:smollm2-135m-instruct"
# The embedded engine reuses the subject's prepared folder when the subject is the embedded model.
ENGINE_MODEL_ID = SUBJECT if config["subject"]["model"] == EMBEDDED else "embedded-smollm2"
MODEL_IDS = sorted({SUBJECT, ENGINE_MODEL_ID})
# Remote roles' key variables: checked at start and forwarded to cluster jobs; values are read in scripts only.
API_KEY_VARS = sorted(
    {
        r.get("api_key_env") or "OPENAI_API_KEY"
        for r in [*config["explainers"].values(), *(config.get("simulators") or {}).values()]
        if r["provider"] == "openai" and r.get("api_key_env", "OPENAI_API_KEY")
    }
)


def model_name_for(wildcards):
    return config["subject"]["model"] if wildcards.model_id == SUBJECT else EMBEDDED


def model_dir(wildcards=None):
    return f"data/models/{SUBJECT}"


def engine_inputs(role):
    """The prepared embedded model, only for roles that run on the embedded engine."""

    def get(wildcards):
        entry = config[role][getattr(wildcards, role[:-1])]
        return [f"data/models/{ENGINE_MODEL_ID}"] if entry["provider"] == "local" else []

    return get


def engine_slots(role):
    """1 for jobs that run the embedded engine: with the profile's local_engine=1 they run one at a time,
    so several engines never fight over the same cores (--cores 8 on a 2-core laptop)."""

    def get(wildcards):
        return 1 if config[role][getattr(wildcards, role[:-1])]["provider"] == "local" else 0

    return get


def role_entry(role):
    """One role entry (e.g. one explainer): editing another explainer does not rerun this job."""

    def get(wildcards):
        return config[role][getattr(wildcards, role[:-1])]

    return get


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


def one_of(names):
    """A wildcard constraint matching exactly the configured names."""
    return "|".join(re.escape(n) for n in names)


def format_spec(wildcards):
    """Only this format's entry: adding or editing another variant does not rerun this job."""
    return config["prompt_formats"][wildcards.format] or {}


def explainer_setting(key):
    def get(wildcards):
        return config["explainers"][wildcards.explainer][key]

    return get


def prompt_files(wildcards=None):
    return expand(f"{RUN}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl", neuron_set=NEURON_SETS,
                  explainer=EXPLAINERS, format=FORMATS)


def explanation_files(wildcards=None):
    return expand(f"{RUN}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.jsonl", neuron_set=NEURON_SETS,
                  explainer=EXPLAINERS, format=FORMATS)


def score_files(wildcards=None):
    return expand(f"{RUN}/scores/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.parquet",
                  neuron_set=NEURON_SETS, explainer=EXPLAINERS, simulator=SIMULATORS, format=FORMATS)


def evaluation_tables(wildcards=None):
    """Every enabled evaluation's table (the registry in autointerp.evaluations), for Table 6."""
    from autointerp.evaluations import enabled_tables

    return enabled_tables(config)


def all_targets():
    targets = ["results/table1.csv", "results/cost_estimate.csv"] + explanation_files()
    return targets + (["results/table6.csv"] if evaluation_tables() else [])
