"""The rendering stage: one JSONL of explainer prompts per (neuron set, explainer, format) (Table 1: autointerp.tables).

A format entry in config is either a registered format (``Summary: {}``) or a variant: a base format plus
overrides (``Summary-3ex: {base: Summary, max_excerpts: 3}``). Each rendering job sees only its own entry,
so adding a variant to the config schedules only that variant's jobs (plus the tables).
"""

from __future__ import annotations

from typing import Any

import copy
import json

from autointerp.prompts.formats import FORMATS, PromptFormat, SeedMutationState, get_format, render, variant_from_config
from autointerp.common.settings import Settings
from autointerp.common.snakemake_io import RuleIO
from autointerp.common.io import atomic_write_text
from autointerp.extract.records import load_records


class FormatConfigError(ValueError):
    pass


def resolve_format(name: str, spec: dict | None) -> PromptFormat:
    """Turn a config entry into a PromptFormat; unknown names get an error listing the known ones."""
    spec = dict(spec or {})
    if not spec and name in FORMATS:
        return get_format(name)
    base = spec.pop("base", name)
    if base not in FORMATS:
        raise FormatConfigError(
            f"prompt_formats.{name}: unknown format {base!r}; known formats: {', '.join(sorted(FORMATS))} "
            "(a variant names one of them as 'base')")
    try:
        return variant_from_config({"base": base, "name": name, **spec})
    except ValueError as exc:
        raise FormatConfigError(f"prompt_formats.{name}: {exc}") from exc


class PromptSettings(Settings):
    """How one format's prompts are rendered for one explainer (its tokenizer and context window)."""

    format: str
    spec: dict[str, Any] | None  # the format's config entry: {} / null, or a variant {base: ..., overrides}
    encoding: str
    context_length: int
    max_completion_tokens: int
    mutate_like_seed: bool

    @classmethod
    def from_config(cls, config, wildcards) -> "PromptSettings":
        explainer = config["explainers"][wildcards["explainer"]]
        prompts = config["prompts"]
        return cls(format=wildcards["format"], spec=config["prompt_formats"][wildcards["format"]],
                   encoding=explainer["encoding"], context_length=explainer["context_length"],
                   max_completion_tokens=prompts["max_completion_tokens"], mutate_like_seed=prompts["mutate_like_seed"])


def run_render_prompts(settings: PromptSettings, io: RuleIO) -> dict:
    n = render_neuron_prompts(io.input["records"], settings.format, settings.spec, io.outputs[0],
                              encoding=settings.encoding, context_length=settings.context_length,
                              max_completion_tokens=settings.max_completion_tokens,
                              mutate_like_seed=settings.mutate_like_seed)
    return {"prompts": n, "format": settings.format}


def render_neuron_prompts(records_path, format_name: str, format_spec: dict | None, out_path, *,
                          encoding: str = "cl100k_base", context_length: int | None = 4097,
                          max_completion_tokens: int = 60, mutate_like_seed: bool = False) -> int:
    """Render every neuron's train records in one format; returns the number of prompts written."""
    fmt = resolve_format(format_name, format_spec)
    neurons = load_records(records_path)
    state = SeedMutationState()
    lines = []
    for nid in sorted(neurons):
        entry = neurons[nid]
        records = copy.deepcopy(entry["train"])
        rendered = render(fmt, records, cutoff=entry["cutoff"], mutate_like_seed=mutate_like_seed,
                          seed_state=state, context_limit=context_length,
                          max_completion_tokens=max_completion_tokens, encoding=encoding)
        line = rendered.to_json_dict(nid, format_name)
        line["base_format"] = fmt.name if format_name in FORMATS else (format_spec or {}).get("base", format_name)
        lines.append(json.dumps(line, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
        if mutate_like_seed:
            # SEED ran AVHS last for each neuron, overwriting the shared few-shot examples (§8.2).
            render("AVHS", copy.deepcopy(entry["train"]), mutate_like_seed=True, seed_state=state,
                   context_limit=context_length, max_completion_tokens=max_completion_tokens, encoding=encoding)
    atomic_write_text(out_path, "".join(line + "\n" for line in lines))
    return len(lines)
