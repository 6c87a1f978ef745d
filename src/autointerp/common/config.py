"""Config validation with one clear line per violation (Snakemake's own ``validate`` stops at the first)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


def _where(error) -> str:
    return "config" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)


def _message(error) -> str:
    """jsonschema's message, except that an unknown key names the nearest valid key."""
    if error.validator != "additionalProperties" or not isinstance(error.schema.get("properties"), dict):
        return error.message
    valid = sorted(error.schema["properties"])
    allowed = set(valid) | set(error.schema.get("patternProperties") or {})
    parts = []
    for key in sorted(k for k in error.instance if k not in allowed):
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        parts.append(f"unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return "; ".join(parts) + f"; valid keys: {', '.join(valid)}"


def validate_config(config: dict, schema_path) -> dict:
    """Validate against the draft 2020-12 schema, listing every violation; fill defaults in place."""
    from jsonschema import Draft202012Validator, validators

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = [f"  - {_where(e)}: {_message(e)}" for e in errors]
        raise ConfigError(
            f"invalid configuration ({len(errors)} problem{'s' if len(errors) > 1 else ''}; schema {schema_path}):\n"
            + "\n".join(lines)
        )

    def set_defaults(validator_cls):
        validate_props = validator_cls.VALIDATORS["properties"]

        def with_defaults(v, properties, instance, schema_):
            if isinstance(instance, dict):
                for key, sub in properties.items():
                    if isinstance(sub, dict) and "default" in sub:
                        instance.setdefault(key, sub["default"])
            yield from validate_props(v, properties, instance, schema_)

        return validators.extend(validator_cls, {"properties": with_defaults})

    for _ in set_defaults(Draft202012Validator)(schema).iter_errors(config):
        pass
    return config


DEFAULT_RUN = "default"
RUN_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # config.schema.yaml's pattern for run


def run_name(config: dict, configfiles=()) -> str:
    """The run's name: ``config['run']``, else the last ``--configfile``'s stem (``config/presets/x.yaml`` -> ``x``;
    the default file ``config.yaml`` -> ``default``), else ``default``. Two configs then never share tables."""
    if config.get("run"):
        return str(config["run"])
    stems = [Path(str(f)).stem for f in configfiles]
    if stems and stems[-1] != "config":
        name = stems[-1]
        if not re.fullmatch(RUN_NAME_PATTERN, name) or name == "puzzles":
            raise ConfigError(f"config file name {name!r} cannot name a run: set run: <name> in the file "
                              "(letters, digits, _ . -)")
        return name
    return DEFAULT_RUN


def run_dirs(run: str) -> dict[str, str]:
    """Where one run's results, logs and benchmarks go. The default run keeps the top-level folders (the main
    command stays ``snakemake --cores 8 results/table6.csv``); any other run gets its own subfolder in each."""
    if run == DEFAULT_RUN:
        return {"results": "results", "logs": "logs", "benchmarks": "benchmarks"}
    return {"results": f"results/{run}", "logs": f"logs/{run}", "benchmarks": f"benchmarks/{run}"}
