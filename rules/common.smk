# Shared helpers (config validation, paths and input functions), included before the other files.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import os  # noqa: E402
import re  # noqa: E402

from autointerp.common.config import ConfigError, run_dirs, run_name, validate_config  # noqa: E402
from autointerp.common.released import released_path  # noqa: E402
from autointerp.extract.chunks import CHUNK_PATTERN, config_set_chunks  # noqa: E402
from autointerp.extract.stage import layer_groups, shard_names  # noqa: E402
from autointerp.extract.subject_models import EMBEDDED_SMOLLM2  # noqa: E402
from autointerp.prompts.stage import resolve_format  # noqa: E402

# Rules that run on the submit host under a cluster executor (profiles/slurm): cheap steps that would wait longer
# in the queue than they run, and the two that download (compute nodes often have no network). Everything else
# (extraction, records, LLM/engine, similarity and N2G jobs) is submitted; tests/test_profiles.py lists both, so a
# new rule must be placed.
localrules:
    prepare_model,
    build_corpus,
    activations_manifest,
    neuron_set,
    render_prompts,
    puzzle_set,
    render_puzzle_prompts,
    prepare_human_study,
    cost_estimate,
    released_file,
    import_explanations,
    import_puzzle_explanations,
    report_plots,
    neuron_pages,
    export,
    table1,
    table2,
    table3,
    table4,
    table5,
    table6,
    n2g_table,
    table_imported,
    paper_comparison,
    table_classify,
    scorer_comparison,


validate_config(config, Path(workflow.basedir) / "config" / "config.schema.yaml")
for _name, _spec in config["prompt_formats"].items():
    resolve_format(_name, _spec)  # unknown formats / bad variant fields fail at start-up


def _file_specs():
    """Every config entry that names a file (path, or one of the paper's released files)."""
    yield from (s for s in config["neuron_sets"].values() if s["kind"] == "csv")
    yield from (s for s in ((config.get("adacs") or {}).get("references") or {}).values() if s["kind"] == "csv")
    yield from (s for s in ((config.get("puzzles") or {}).get("sets") or {}).values() if s["source"] == "file")
    for _imported in config["imported_explanations"].values():
        yield from (_imported.get("neuron_sets") or {}).values()
        yield from (_imported.get("puzzle_sets") or {}).values()


# A released file ({released: name}) is read from data/released/<name>, which rule released_file fills from
# released_dir or a pinned download (autointerp.common.released): every reader then sees a plain path.
RELEASED = set()
for _spec in _file_specs():
    if _spec.get("released"):
        try:
            _spec["path"] = released_path(_spec["released"])
        except ValueError as _exc:
            raise ConfigError(str(_exc)) from None
        RELEASED.add(_spec["released"])

SUBJECT = config["subject"]["id"]
CORPUS = config["corpus"]["id"]
NEURON_SETS = sorted(config["neuron_sets"])
FORMATS = sorted(config["prompt_formats"])
EXPLAINERS = sorted(config["explainers"])
if not EXPLAINERS and not config["imported_explanations"]:
    raise ConfigError("the config has no explainers and no imported_explanations: add one of them (config/README.md)")
SIMULATORS = sorted(config.get("simulators") or {})
# Classification scorers (detection, fuzzing): each kind a scorer runs is its own Table 6 evaluation.
SCORERS = sorted(config.get("scorers") or {})
CLASSIFY_KINDS = ("detection", "fuzzing")


def scorers_of(kind):
    return [s for s in SCORERS if kind in config["scorers"][s]["kinds"]]


def scorer_sets(name):
    """The neuron sets a scorer scores (its ``neuron_sets``, else every set)."""
    return config["scorers"][name].get("neuron_sets") or NEURON_SETS


for _name in SCORERS:
    for _set in config["scorers"][_name].get("neuron_sets") or []:
        if _set not in NEURON_SETS:
            raise ConfigError(f"scorers.{_name}.neuron_sets: {_set!r} is not a configured neuron set "
                              f"({', '.join(NEURON_SETS)}); add it to neuron_sets or fix the name")

# Reference explainers (role: reference) only produce baseline explanations (e.g. for AdaCS); they are not ranked.
GENERATED = [e for e in EXPLAINERS if config["explainers"][e].get("role", "compared") == "compared"]
# Imported explanations (imported_explanations: files, no explainer) are compared like generated ones.
IMPORTED = sorted(config["imported_explanations"])
COMPARED = GENERATED + IMPORTED
for _name in IMPORTED:
    _spec = config["imported_explanations"][_name]
    if _name in EXPLAINERS:
        raise ConfigError(f"imported_explanations.{_name}: the name is also an explainer's; rename one of them")
    for _what, _known, _key in (("neuron set", NEURON_SETS, "neuron_sets"),
                                ("puzzle set", sorted((config.get("puzzles") or {}).get("sets") or {}), "puzzle_sets")):
        for _set in _spec.get(_key) or {}:
            if _set not in _known:
                raise ConfigError(f"imported_explanations.{_name}.{_key}.{_set}: no such {_what} (configured: "
                                  f"{', '.join(_known) or 'none'}); add it to the config or fix the name")
    for _fmt in _spec.get("formats") or []:
        if _fmt not in FORMATS:
            raise ConfigError(f"imported_explanations.{_name}.formats: {_fmt!r} is not a configured prompt format "
                              f"({', '.join(FORMATS)})")


# Runs: each config writes its results, logs and benchmarks under its own name (autointerp.common.config.run_dirs;
# the default run keeps results/ itself). The prepared model, corpus and activations are shared by every run with
# the same subject and corpus ids (their paths carry no run name; params compare by value, so a preset that changes
# only LLM roles reuses them).
RUN_NAME = run_name(config, workflow.overwrite_configfiles or ())
R, LOGS, BENCH = (run_dirs(RUN_NAME)[k] for k in ("results", "logs", "benchmarks"))
SHARED = f"results/{SUBJECT}/{CORPUS}"
RUN = f"{R}/{SUBJECT}/{CORPUS}"
for _target in sys.argv[1:]:
    # results/table6.csv with a preset would otherwise be Snakemake's "missing" error; say where this run's table is.
    # (The command line, since Snakemake knows its targets only after the workflow is parsed.)
    if R != "results" and re.fullmatch(r"results/(table\w*|cost_estimate)\.csv", str(_target)):
        raise ConfigError(f"{_target} is the default run's file; this config is run {RUN_NAME!r}, so ask for "
                          f"{R}/{Path(str(_target)).name}")


def explainer_formats(name):
    spec = config["imported_explanations"].get(name) or config["explainers"][name]
    return sorted(spec.get("formats") or FORMATS)


def explainer_sets(name, key="neuron_sets"):
    """The neuron sets (``key="puzzle_sets"``: puzzle sets) an explainer's explanations cover: every configured
    one for a generated explainer, the files' sets for imported explanations."""
    if name in config["imported_explanations"]:
        return sorted(config["imported_explanations"][name].get(key) or {})
    return NEURON_SETS if key == "neuron_sets" else PUZZLE_SETS


# The embedded engine reuses the subject's prepared folder when the subject is the embedded model.
ENGINE_MODEL_ID = SUBJECT if config["subject"]["model"] == EMBEDDED_SMOLLM2 else "embedded-smollm2"
MODEL_IDS = sorted({SUBJECT, ENGINE_MODEL_ID})


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


# Lanes are CPUs of the machine Snakemake runs on: under a cluster executor only local rules count against them
# (each submitted job has its own allocation). profiles/default's local_engine=2 also applies to cluster runs
# (the workflow profile overrides --profile key by key), so a global scope would let 2 engine jobs run in the
# whole cluster and hold every engine job back while the extraction runs.
resource_scopes:
    local_engine="local",


def engine_slots(role):
    """1 for jobs that run the embedded engine (one thread each, ``llm.engine_threads``): with the profile's
    local_engine=2 two run at once on a 2-core laptop, and never more however large --cores is (the README's
    --cores 8 on 2 cores); two 1-thread engines out-run one 2-thread engine (measured: docs/benchmarks.md)."""

    def get(wildcards):
        return 1 if config[role][getattr(wildcards, role[:-1])]["provider"] == "local" else 0

    return get


def api_share(wildcards=None):
    """How many API jobs may run at once: the api_calls limit (profiles; --resources). Each API job takes that
    share of its role's rate limits (autointerp.llm.roles.open_client), so jobs side by side, on one machine or
    across a cluster, stay within the account's limit together. A job submitted to a cluster re-reads this
    Snakefile with its own resources as the limits (api_calls=1, api_share=N), hence api_share first."""
    for name in ("api_share", "api_calls"):
        limit = getattr(workflow.global_resources.get(name), "value", workflow.global_resources.get(name))
        if isinstance(limit, int) and limit > 0:
            return limit
    return 1


def corpus_path(wildcards=None):
    return f"results/{SUBJECT}/corpus/{CORPUS}.parquet"


def activations_dir(wildcards=None):
    """The activations, as their manifest (written once every layer group is merged)."""
    return f"{SHARED}/activations/manifest.json"


# Sharded extraction: one job per corpus shard, one merge job per layer group (autointerp.extract.stage).
SHARDS = shard_names(config["extraction"]["shards"])
LAYER_GROUPS = layer_groups(config["subject"], config["extraction"]["layers_per_merge"])


def shard_dirs(wildcards):
    return expand(f"{SHARED}/activation_shards/{{shard}}", shard=SHARDS)


# Chunks (config chunks; autointerp.extract.chunks): with chunking on, records, prompts, explain and simulate run
# once per chunk of a neuron set (their paths gain /{chunk}), and gather_* rules concatenate each set's chunks into
# the per-set files every table reads. Off (null), those four rules write the per-set files themselves.
CHUNKED = config["chunks"] is not None
CH = f"{os.sep}{{chunk}}" if CHUNKED else ""  # a subfolder per set/explainer/format (os.sep: a "/" literal lints as absolute)
if CHUNKED and config["prompts"]["mutate_like_seed"]:
    raise ConfigError("prompts.mutate_like_seed carries the reference's few-shot mutation from neuron to neuron, "
                      "across a whole set: it needs chunks: null")


def set_chunks(neuron_set):
    return list(config_set_chunks(config, neuron_set))


def chunk_files(pattern):
    """Input function: ``pattern`` (a str.format pattern over the job's wildcards and {chunk}) for every chunk of
    the job's neuron set, in neuron order."""

    def get(wildcards):
        return [pattern.format(**dict(wildcards.items()), chunk=c) for c in set_chunks(wildcards.neuron_set)]

    return get


def records_inputs(wildcards):
    """A chunk of a csv/all set is named by its params; every other records job reads the set's CSV."""
    inputs = {"activations": activations_dir(), "corpus": corpus_path(), "model": model_dir()}
    chunk = getattr(wildcards, "chunk", None)
    if chunk is None or config_set_chunks(config, wildcards.neuron_set)[chunk] is None:
        inputs["neurons"] = f"{RUN}/neuron_sets/{wildcards.neuron_set}.csv"
    return inputs


def neuron_set_inputs(wildcards):
    """A csv set is checked against the model's shape (known or configured) without activations, so a run that
    only compares imported explanations of GPT-2 XL neurons never extracts them."""
    from autointerp.extract.subject_models import model_shape

    spec = config["neuron_sets"][wildcards.neuron_set]
    if spec["kind"] == "csv":
        return {"csv": spec["path"]} | ({} if model_shape(config["subject"]) else {"activations": activations_dir()})
    return {"activations": activations_dir()}


def one_of(names):
    """A wildcard constraint matching exactly the configured names (nothing at all for none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def _per_explainer(pattern, explainers, sets=None, **more):
    return [
        path
        for e in explainers
        for path in expand(pattern, explainer=e, format=explainer_formats(e),
                           neuron_set=[s for s in explainer_sets(e) if sets is None or s in sets], **more)
    ]


def prompt_files(wildcards=None):
    return _per_explainer(f"{RUN}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl", EXPLAINERS)


def compared_prompt_files(wildcards=None):
    return _per_explainer(f"{RUN}/prompts/{{neuron_set}}/{{explainer}}/{{format}}.jsonl", GENERATED)


def explanation_files(wildcards=None, folder="explanations"):
    """Compared explainers on every neuron set; reference explainers only where an AdaCS reference uses them
    (``folder="prompts"``: the prompt files those explanations come from)."""
    pattern = f"{RUN}/{folder}/{{neuron_set}}/{{explainer}}/{{format}}.jsonl"
    files = _per_explainer(pattern, COMPARED if folder == "explanations" else GENERATED)
    for name in NEURON_SETS:
        spec = (config.get("adacs") or {}).get("references", {}).get(name)
        if spec and spec["kind"] == "explainer":
            files.append(pattern.format(neuron_set=name, explainer=spec["explainer"],
                                        format=spec.get("format", "Original")))
    return files


def explained_prompt_files(wildcards=None):
    """The prompt files that will be explained (reference explainers only where a reference uses them)."""
    return explanation_files(folder="prompts")


def _per_puzzle_set(pattern, explainers=None):
    return [
        path
        for e in (COMPARED if explainers is None else explainers)
        for path in expand(pattern, explainer=e, format=explainer_formats(e),
                           puzzle_set=[p for p in explainer_sets(e, "puzzle_sets") if p in PUZZLE_SETS])
    ]


def puzzle_prompt_files(wildcards=None):
    return _per_puzzle_set(f"{R}/puzzles/{{puzzle_set}}/prompts/{{explainer}}/{{format}}.jsonl", GENERATED)


def paid_gate(section, name=None):
    """The cost estimate, as an input of jobs whose role has a price: it runs (and applies llm.max_cost_usd)
    before the first paid call. Jobs of free roles (the embedded engine, self-hosted servers) do not wait.
    ``name``: the role, for rules without a role wildcard (the embedders).

    A plain input, not ancient(): when the estimate changes (a new prompt variant, a changed role) the run's paid
    jobs run again, answered from the response cache (no request, no cost). ancient() would spare that, but
    Snakemake 9 then drops a job's own rerun reasons (changed params, missing output) whenever the estimate
    reruns in the same invocation: it masks the jobs below a rerunning job and does not follow ancient edges."""

    def get(wildcards):
        role = (config.get(section) or {}).get(name or getattr(wildcards, section[:-1], ""))
        priced = role is not None and role["provider"] != "local"
        priced = priced and bool(role["price_input_per_1m"] or role["price_output_per_1m"])
        return [f"{R}/cost_estimate.csv"] if priced else []

    return get


def score_files(wildcards=None):
    return _per_explainer(f"{RUN}/scores/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.parquet", COMPARED,
                          simulator=SIMULATORS)


def classify_files(kind):
    """Per-explanation detection or fuzzing scores (per set: gathered when chunked)."""

    def get(wildcards=None):
        pattern = f"{RUN}/{kind}/{{neuron_set}}/{{explainer}}/{{scorer}}/{{format}}.parquet"
        return [p for s in scorers_of(kind) for p in _per_explainer(pattern, COMPARED, scorer_sets(s), scorer=[s])]

    return get


def usage_files(stage, role, names):
    """An LLM stage's usage files per (set, explainer, role, format): with chunks, every chunk's (they are not
    gathered); ``role`` is the role's wildcard (simulator, scorer), ``names`` its configured names."""

    def get(wildcards=None):
        pattern = f"{RUN}/usage/{stage}/{{neuron_set}}/{{explainer}}/{{{role}}}/{{format}}"
        files = [f for n in names
                 for f in _per_explainer(pattern, COMPARED, scorer_sets(n) if role == "scorer" else None, **{role: [n]})]
        if not CHUNKED:
            return [f"{f}.json" for f in files]
        return [f"{f}/{c}.json" for f in files for c in set_chunks(Path(f).parent.parent.parent.name)]

    return get


def evaluation_tables(wildcards=None):
    """Every enabled evaluation's table (the registry in autointerp.tables.evaluations), for Table 6."""
    from autointerp.tables.evaluations import enabled_tables

    return enabled_tables(config, R)


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
    return _per_explainer(f"{RUN}/similarity/{{neuron_set}}/{{explainer}}/{{format}}.parquet", COMPARED, ADACS_SETS)


def puzzle_set_inputs(wildcards):
    spec = config["puzzles"]["sets"][wildcards.puzzle_set]
    if spec["source"] == "generated":
        return {"corpus": corpus_path(), "model": model_dir()}
    if spec["source"] == "file":
        return {"file": spec["path"]}
    return {}


def puzzle_similarity_files(wildcards=None):
    return _per_puzzle_set(f"{R}/puzzles/{{puzzle_set}}/similarity/{{explainer}}/{{format}}.parquet")


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


def n2g_files(name):
    """Another file of each set's n2g job (metrics.csv, graphs), for the report."""
    return expand(f"{RUN}/n2g/{{neuron_set}}/{name}", neuron_set=NEURON_SETS) if N2G.get("enabled", False) else []


# Each evaluation's per-neuron files, keyed by its name in the evaluation registry
# (autointerp.tables.evaluations.NeuronScores reads them): the neuron pages and the export show them all.
NEURON_SCORE_FILES = {"simulate_score": score_files, "adacs": similarity_files,
                      **{kind: classify_files(kind) for kind in CLASSIFY_KINDS}}


def run_data_inputs(wildcards=None):
    """What the report reads of a finished run (autointerp.report.data.RunData.read)."""
    inputs = {
        "neuron_sets": expand(f"{RUN}/neuron_sets/{{neuron_set}}.csv", neuron_set=NEURON_SETS),
        "records": expand(f"{RUN}/records/{{neuron_set}}.parquet", neuron_set=NEURON_SETS),
        "activations": activations_dir(),
        "explanations": _per_explainer(f"{RUN}/explanations/{{neuron_set}}/{{explainer}}/{{format}}.jsonl", COMPARED),
        "prompts": compared_prompt_files(),
        "methods": n2g_score_files(),
        "method_metrics": n2g_files("metrics.csv"),
    }
    return inputs | {name: files() for name, files in NEURON_SCORE_FILES.items() if files()}


def simulation_files(wildcards=None):
    return _per_explainer(f"{RUN}/simulations/{{neuron_set}}/{{explainer}}/{{simulator}}/{{format}}.parquet",
                          COMPARED, simulator=SIMULATORS)


def imported_usage_files(wildcards=None):
    """Every import job's usage file (their counts make Table "imported")."""
    neurons = _per_explainer(f"{RUN}/usage/import/{{neuron_set}}/{{explainer}}/{{format}}.json", IMPORTED)
    return neurons + _per_puzzle_set(f"{R}/puzzles/{{puzzle_set}}/usage/import/{{explainer}}/{{format}}.json",
                                     IMPORTED)


def released_source(wildcards):
    """The local copy of a released file when released_dir holds it (checked against the pinned sha256)."""
    local = Path(config["released_dir"] or "") / wildcards.name
    return [str(local)] if config["released_dir"] and local.is_file() else []


def imported_file(wildcards):
    spec = config["imported_explanations"][wildcards.explainer]
    key = "puzzle_sets" if hasattr(wildcards, "puzzle_set") else "neuron_sets"
    return spec[key][getattr(wildcards, "puzzle_set", None) or wildcards.neuron_set]["path"]


def report_tables(wildcards=None):
    """Every table of the run, for the report's index."""
    tables = evaluation_tables() + companion_tables()
    if evaluation_tables():
        tables += [f"{R}/table6.csv", f"{R}/table6_comparison.csv", f"{R}/table6_columns.csv"]
    return list(dict.fromkeys(tables))


def companion_tables(wildcards=None):
    """Tables that are not ranked but that the main command should leave behind (Table 1 and the cost estimate
    need rendered prompts: a run of imported explanations only has none)."""
    tables = [f"{R}/table1.csv", f"{R}/cost_estimate.csv"] if GENERATED else []
    tables += [f"{R}/table_imported.csv"] if IMPORTED else []
    tables += [f"{R}/table_paper.csv"] if config.get("paper_reported") else []
    tables += [f"{R}/table_scorers.csv"] if SCORERS else []
    return tables + ([f"{R}/table_n2g.csv"] if N2G.get("enabled", False) else [])


# Records (and so the subject's activations) are needed only by prompts, simulation, N2G and top-token
# references: a run of imported explanations with AdaCS and puzzles needs no subject model at all.
NEEDS_RECORDS = bool(GENERATED or SIMULATORS or SCORERS or N2G.get("enabled", False)
                     or any(s["kind"] == "top_tokens" for s in (ADACS.get("references") or {}).values()))


def all_targets():
    targets = companion_tables() + explanation_files()
    if NEEDS_RECORDS:
        targets += [f"{R}/report", *expand(f"{R}/export/{{neuron_set}}.parquet", neuron_set=NEURON_SETS)]
    return targets + ([f"{R}/table6.csv"] if evaluation_tables() else [])


def stage_settings(cls, *parts):
    """params function: the stage's settings built from the validated config for these wildcards."""
    def get(wildcards):
        return cls.from_config(config, dict(wildcards.items())).to_params(*parts)
    return get


# The role (section, name) each LLM rule calls; similarity rules use the embedder their evaluation names.
LLM_RULE_ROLES = {
    "explain": lambda w: ("explainers", w["explainer"]),
    "explain_puzzles": lambda w: ("explainers", w["explainer"]),
    "simulate_score": lambda w: ("simulators", w["simulator"]),
    "classify": lambda w: ("scorers", w["scorer"]),
    "adacs_similarity": lambda w: ("embedders", config["adacs"]["embedder"]),
    "puzzle_similarity": lambda w: ("embedders", config["puzzles"]["embedder"]),
}


def missing_api_keys(jobs):
    """Key variables that jobs about to run need and the environment lacks. Checked when a run starts (onstart: not
    in dry runs, so plans need no secrets) rather than at parse time, so that only runs that call an endpoint
    needing a key ask for it; values are read by the jobs themselves and never pass through Snakemake."""
    import os

    needed = {}
    for job in jobs:
        if job.rule.name in LLM_RULE_ROLES:
            section, name = LLM_RULE_ROLES[job.rule.name](job.wildcards)
            role = config[section][name]
            if role["provider"] == "openai" and role.get("api_key_env"):
                needed.setdefault(role["api_key_env"], set()).add(f"{section}.{name}")
    return {var: sorted(roles) for var, roles in sorted(needed.items()) if not os.environ.get(var)}

