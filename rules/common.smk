# Shared helpers (config validation, paths and input functions), included before the other files.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import re  # noqa: E402

from autointerp.common.config import validate_config  # noqa: E402
from autointerp.extract.subject_models import EMBEDDED_SMOLLM2  # noqa: E402
from autointerp.prompts.stage import resolve_format  # noqa: E402

validate_config(config, Path(workflow.basedir) / "config" / "config.schema.yaml")
for _name, _spec in config["prompt_formats"].items():
    resolve_format(_name, _spec)  # unknown formats / bad variant fields fail at start-up

SUBJECT = config["subject"]["id"]
CORPUS = config["corpus"]["id"]
NEURON_SETS = sorted(config["neuron_sets"])
FORMATS = sorted(config["prompt_formats"])
EXPLAINERS = sorted(config["explainers"])
SIMULATORS = sorted(config.get("simulators") or {})
# Reference explainers (role: reference) only produce baseline explanations (e.g. for AdaCS); they are not ranked.
COMPARED = [e for e in EXPLAINERS if config["explainers"][e].get("role", "compared") == "compared"]


RUN = f"results/{SUBJECT}/{CORPUS}"


def explainer_formats(name):
    return sorted(config["explainers"][name].get("formats") or FORMATS)


# The embedded engine reuses the subject's prepared folder when the subject is the embedded model.
ENGINE_MODEL_ID = SUBJECT if config["subject"]["model"] == EMBEDDED_SMOLLM2 else "embedded-smollm2"
MODEL_IDS = sorted({SUBJECT, ENGINE_MODEL_ID})
# Remote roles' key variables: checked at start and forwarded to cluster jobs; values are read in scripts only.
API_KEY_VARS = sorted(
    {
        r["api_key_env"]
        for section in ("explainers", "simulators", "embedders")
        for r in (config.get(section) or {}).values()
        if r["provider"] == "openai" and r.get("api_key_env")
    }
)


def model_dir(wildcards=None):
    return f"data/models/{SUBJECT}"


def engine_inputs(role):
    """The prepared embedded model, only for roles that run on the embedded engine."""

    def get(wildcards):
        entry = config[role][getattr(wildcards, role[:-1])]
        return [f"data/models/{ENGINE_MODEL_ID}"] if entry["provider"] == "local" else []

    return get


# local_engine is a count of CPU lanes (profiles/default: 2). A job that asks for more than the limit gets
# the limit (Snakemake caps resources at the --resources value), so ALL_LANES means "alone on the machine".
ALL_LANES = 1024


def engine_slots(role):
    """1 for jobs that run the embedded engine (one thread each, ``llm.engine_threads``): with the profile's
    local_engine=2 two run at once on a 2-core laptop, and never more however large --cores is (the README's
    --cores 8 on 2 cores); two 1-thread engines out-run one 2-thread engine (measured: docs/benchmarks.md)."""

    def get(wildcards):
        return 1 if config[role][getattr(wildcards, role[:-1])]["provider"] == "local" else 0

    return get


def corpus_path(wildcards=None):
    return f"results/{SUBJECT}/corpus/{CORPUS}.parquet"


def activations_dir(wildcards=None):
    return f"{RUN}/activations"


def neuron_set_inputs(wildcards):
    spec = config["neuron_sets"][wildcards.neuron_set]
    inputs = {"activations": activations_dir()}
    if spec["kind"] == "csv":
        inputs["csv"] = spec["path"]
    return inputs


def one_of(names):
    """A wildcard constraint matching exactly the configured names."""
    return "|".join(re.escape(n) for n in names)


def _per_explainer(pattern, explainers, **more):
    return [
        path
        for e in explainers
        for path in expand(pattern, explainer=e, format=explainer_formats(e), neuron_set=NEURON_SETS, **more)
    ]


def prompt_files(wildcards=None):
    return _per_explainer(f"{RUN}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl", EXPLAINERS)


def compared_prompt_files(wildcards=None):
    return _per_explainer(f"{RUN}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl", COMPARED)


def explanation_files(wildcards=None):
    """Compared explainers on every neuron set; reference explainers only where an AdaCS reference uses them."""
    pattern = f"{RUN}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.jsonl"
    files = _per_explainer(pattern, COMPARED)
    for name in NEURON_SETS:
        spec = (config.get("adacs") or {}).get("references", {}).get(name)
        if spec and spec["kind"] == "explainer":
            files.append(pattern.format(neuron_set=name, explainer=spec["explainer"],
                                        format=spec.get("format", "Original")))
    return files


def score_files(wildcards=None):
    return _per_explainer(f"{RUN}/scores/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.parquet", COMPARED,
                          simulator=SIMULATORS)


def evaluation_tables(wildcards=None):
    """Every enabled evaluation's table (the registry in autointerp.tables.evaluations), for Table 6."""
    from autointerp.tables.evaluations import enabled_tables

    return enabled_tables(config)


ADACS = config.get("adacs") or {}
ADACS_SETS = sorted(ADACS.get("references") or {})
PUZZLES = config.get("puzzles") or {}
PUZZLE_SETS = sorted(PUZZLES.get("sets") or {})


def reference_inputs(wildcards):
    spec = config["adacs"]["references"][wildcards.neuron_set]
    if spec["kind"] == "top_tokens":
        return [f"{RUN}/records/{wildcards.neuron_set}.parquet"]
    if spec["kind"] == "explainer":
        return [f"{RUN}/explanations/{wildcards.neuron_set}/{spec['explainer']}/{spec.get('format', 'Original')}.jsonl"]
    if spec["kind"] == "csv":
        return [spec["path"]]
    return []


def similarity_files(wildcards=None):
    return [
        path
        for e in COMPARED
        for path in expand(f"{RUN}/similarity/{{neuron_set}}/{{explainer}}/{{format}}.parquet", explainer=e,
                           format=explainer_formats(e), neuron_set=ADACS_SETS)
    ]


def puzzle_set_inputs(wildcards):
    spec = config["puzzles"]["sets"][wildcards.puzzle_set]
    if spec["source"] == "generated":
        return {"corpus": corpus_path(), "model": model_dir()}
    if spec["source"] == "file":
        return {"file": spec["path"]}
    return {}


def puzzle_similarity_files(wildcards=None):
    return [
        path
        for e in COMPARED
        for path in expand("results/puzzles/{puzzle_set}/similarity/{explainer}/{format}.parquet", explainer=e,
                           format=explainer_formats(e), puzzle_set=PUZZLE_SETS)
    ]


HUMAN_EVAL = config.get("human_eval") or {}
N2G = config.get("n2g") or {}


def n2g_score_files(wildcards=None):
    """N2G and its token-lookup baseline, scored like the simulator (rows of Table 2)."""
    if not N2G.get("enabled", False):
        return []
    return expand(f"{RUN}/n2g/{{neuron_set}}/{{method}}.parquet", neuron_set=NEURON_SETS,
                  method=["N2G", "TokenLookup"])


def study_explanation_files(wildcards):
    """The explainer's explanations of every format it ran, for one neuron set."""
    return expand(f"{RUN}/explanations/{wildcards.neuron_set}/{wildcards.explainer}/{{format}}.jsonl",
                  format=explainer_formats(wildcards.explainer))


def companion_tables(wildcards=None):
    """Tables that are not ranked but that the main command should leave behind."""
    tables = ["results/table1.csv", "results/cost_estimate.csv"]
    return tables + (["results/table_n2g.csv"] if N2G.get("enabled", False) else [])


def all_targets():
    targets = ["results/table1.csv", "results/cost_estimate.csv"] + explanation_files()
    return targets + (["results/table6.csv"] if evaluation_tables() else [])


def stage_settings(cls, *parts):
    """params function: the stage's settings built from the validated config for these wildcards."""
    def get(wildcards):
        return cls.from_config(config, dict(wildcards.items())).to_params(*parts)
    return get
