"""The closed config schema: every object refuses undeclared keys, a misspelt key names the nearest valid one,
and every shipped config validates. The stage settings are built from the validated config only."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from autointerp.common.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "config.schema.yaml"


def _default() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _objects(node, path="schema"):
    """Every sub-schema that declares properties (i.e. describes an object with named keys)."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            yield path, node
        for key, value in node.items():
            if key.startswith("x-"):
                continue
            yield from _objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{path}[{i}]")


def test_every_object_in_the_schema_is_closed():
    schema = yaml.safe_load(SCHEMA.read_text())
    objects = list(_objects(schema))
    assert len(objects) > 15
    # if/then clauses only add `required`; every object that declares properties must refuse undeclared keys
    open_ = [p for p, node in objects if node.get("additionalProperties") is not False and ".if" not in p]
    assert open_ == []


@pytest.mark.parametrize("where, key, nearest", [
    (("explainers", "smollm2"), "temprature", "temperature"),
    ((), "neuron_set", "neuron_sets"),
    (("simulators", "smollm2"), "top_logprob", "top_logprobs"),
    (("embedders", "minilm"), "modle", "model"),
    (("adacs", "references", "random"), "n_token", "n_tokens"),
    (("puzzles", "sets", "generated"), "sentence_per_puzzle", "sentences_per_puzzle"),
    (("prompt_formats", "Summary"), "max_excerpt", "max_excerpts"),
    (("llm",), "max_extra_sample", "max_extra_samples"),
    (("neuron_sets", "random"), "totl", "total"),
])
def test_a_misspelt_key_is_refused_naming_path_and_nearest_key(where, key, nearest):
    config = _default()
    node = config
    for part in where:
        node = node.setdefault(part, {}) if part == "Summary" else node[part]
    node[key] = 1
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    message = str(err.value)
    location = "config" + "".join(f"[{p!r}]" for p in where)
    assert f"{location}: unknown key {key!r} (did you mean {nearest!r}?)" in message


def _with_base(path: Path) -> dict:
    """A preset, or an overlay (no subject: given after its base preset, as its header's --configfile says)
    merged onto its base the way Snakemake merges config files."""
    import re

    from snakemake.utils import update_config

    config = yaml.safe_load(path.read_text())
    if "subject" in config:
        return config
    base = re.search(r"--configfile (\S+) " + re.escape(f"config/presets/{path.name}"), path.read_text())
    assert base, f"{path.name} is neither a complete config nor names its base preset in its header"
    merged = yaml.safe_load((ROOT / base.group(1)).read_text())
    update_config(merged, config)
    return merged


def test_shipped_configs_validate_and_seed_their_explainers():
    for path in [ROOT / "config" / "config.yaml", *sorted((ROOT / "config" / "presets").glob("*.yaml"))]:
        config = _with_base(path)
        validate_config(config, SCHEMA)
        for name, role in config["explainers"].items():
            assert role["seed"] is not None, f"{path.name}: explainer {name} is unseeded"


def test_stage_settings_come_from_the_validated_config():
    from autointerp.explain.stage import ExplainSettings
    from autointerp.extract.stage import ExtractSettings
    from autointerp.simulate.stage import SimulateSettings

    config = _default()
    config["llm"] = {"max_extra_samples": 5}
    config["explainers"]["smollm2"].update(temperature=0.3, seed=9)
    validate_config(config, SCHEMA)
    explain = ExplainSettings.from_config(config, {"explainer": "smollm2"})
    assert (explain.role.temperature, explain.role.seed, explain.max_extra_samples) == (0.3, 9, 5)
    assert explain.max_invalid_fraction == 0.2  # the schema's default, filled by validation
    with pytest.raises(Exception):  # frozen
        explain.samples = 2
    # params are plain, key-sorted data and round-trip to an equal object
    params = explain.to_params()
    assert list(params) == sorted(params)
    assert ExplainSettings.from_params(copy.deepcopy(params)) == explain
    # a rule gets only the parts it reads: editing records never changes extraction's params
    edited = copy.deepcopy(config)
    edited["records"]["n_examples_per_split"] = 4
    before = ExtractSettings.from_config(config, {}).to_params("subject", "extraction")
    after = ExtractSettings.from_config(edited, {}).to_params("subject", "extraction")
    assert before == after
    assert ExtractSettings.from_config(config, {}).to_params("records") != \
        ExtractSettings.from_config(edited, {}).to_params("records")
    simulate = SimulateSettings.from_config(config, {"simulator": "smollm2"})
    assert simulate.role.top_logprobs == 15 and simulate.role.mode == "prompt_logprobs"
    with pytest.raises(Exception):  # settings refuse fields they do not declare
        ExplainSettings.from_params({**params, "temprature": 1})
