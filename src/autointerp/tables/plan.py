"""The plan a dry run prints before anything exists (no weights, no activations, no prompts): neurons per set, a
cost estimate from a stand-in neuron, and the scratch disk the run will need.

The stand-in neuron is the first example of the reference's few-shot set (real GPT-2 excerpts with activations),
cut to the corpus's excerpt length: every format renders its prompt for it with each explainer's encoding, and
the simulator prompts are built on its records. ``cost_estimate.csv`` replaces this figure once the prompts are
rendered (it counts the real ones); the plan is for deciding whether to start.
"""

from __future__ import annotations

from typing import Any

from autointerp.tables.cost import PLACEHOLDER_EXPLANATION, _usd, classify_tokens, simulation_tokens

GB = 1e9


def set_sizes(config: dict) -> dict[str, int | None]:
    """Neurons per set (None where only the activations can tell, e.g. a random set over layers of unknown count)."""
    from autointerp.extract.chunks import static_neurons
    from autointerp.extract.subject_models import model_shape

    subject = config["subject"]
    shape = model_shape(subject)
    layers = subject.get("layers", "all")
    n_layers = (shape[0] if shape else None) if layers == "all" else len(layers)
    out: dict[str, int | None] = {}
    for name, spec in sorted(config["neuron_sets"].items()):
        static = static_neurons(spec, subject) if spec["kind"] in ("csv", "all") and (shape or spec["kind"] == "csv") \
            else None
        if static is not None:
            out[name] = len(static)
        elif spec.get("total"):
            out[name] = int(spec["total"])
        else:
            # per_layer over a known layer count; kind all of a model whose shape is unknown: only the run can tell
            out[name] = int(spec["per_layer"]) * n_layers if n_layers and spec.get("per_layer") else None
    return out


def _stand_in(excerpt_tokens: int, n: int):
    from autointerp.prompts.formats.few_shot import load_few_shot_set

    example = load_few_shot_set("original")[0]
    records = []
    for rec in example.activation_records[:n]:
        records.append(type(rec)(list(rec.tokens)[:excerpt_tokens], list(rec.activations)[:excerpt_tokens]))
    while len(records) < n:  # fewer examples than a split holds: repeat them
        records.append(records[len(records) % max(1, len(example.activation_records))])
    return records


def cost_plan(config: dict, sizes: dict[str, int | None]) -> list[dict[str, Any]]:
    """Rows (stage, role, calls, usd) for explain and simulate_score over every set of known size."""
    from autointerp.prompts.formats import render
    from autointerp.prompts.stage import resolve_format

    n_split = int(config["records"]["n_examples_per_split"])
    records = _stand_in(int(config["corpus"]["excerpt_tokens"]), n_split)
    cutoff = 0.5 * max(max(r.activations) for r in records)
    neurons = sum(n for n in sizes.values() if n)
    rows = []
    for name, role in sorted(config["explainers"].items()):
        samples = int(role.get("samples", 1))
        for fmt_name in sorted(role.get("formats") or config["prompt_formats"]):
            fmt = resolve_format(fmt_name, config["prompt_formats"].get(fmt_name))
            prompt = render(fmt, [type(r)(list(r.tokens), list(r.activations)) for r in records], cutoff=cutoff,
                            context_limit=role.get("context_length"), encoding=role.get("encoding", "cl100k_base"),
                            max_completion_tokens=int(config["prompts"]["max_completion_tokens"])).prompt_tokens
            calls = neurons * samples
            rows.append({"stage": "explain", "role": name, "calls": calls,
                         "usd": _usd(role, calls * prompt, calls * 15)})
    valid = 2 * n_split
    for name, sim in sorted((config.get("simulators") or {}).items()):
        prompt = completion = 0
        for rec in records:
            p, c, _ = simulation_tokens(list(rec.tokens), sim, PLACEHOLDER_EXPLANATION)
            prompt, completion = prompt + p, completion + c
        per_record = (prompt / len(records), completion / len(records))
        explanations = sum(neurons * int(e.get("samples", 1)) * len(e.get("formats") or config["prompt_formats"])
                           for e in config["explainers"].values() if e.get("role", "compared") == "compared")
        calls = explanations * valid
        rows.append({"stage": "simulate_score", "role": name, "calls": calls,
                     "usd": _usd(sim, calls * per_record[0], calls * per_record[1])})
    # The stand-in's records serve as the held-out split: its first half as top records, the rest as random ones.
    valid = [{"source": "top" if i < n_split else "random", "excerpt_id": i, "tokens": list(r.tokens),
              "activations": list(r.activations)} for i, r in enumerate(records + records)]
    explanations = sum(neurons * int(e.get("samples", 1)) * len(e.get("formats") or config["prompt_formats"])
                       for e in config["explainers"].values() if e.get("role", "compared") == "compared")
    for name, role in sorted((config.get("scorers") or {}).items()):
        share = (sum(sizes.get(s) or 0 for s in role["neuron_sets"]) / neurons if role.get("neuron_sets")
                 and neurons else 1.0)
        for kind in role.get("kinds") or ("detection", "fuzzing"):
            prompt, completion, _ = classify_tokens(kind, valid, role, PLACEHOLDER_EXPLANATION)
            calls = round(explanations * share)
            rows.append({"stage": kind, "role": name, "calls": calls,
                         "usd": _usd(role, calls * prompt, calls * completion)})
    return rows


def scratch_plan(config: dict, sizes: dict[str, int | None]) -> dict[str, float]:
    """Bytes on disk by kind (upper bounds: Parquet compression ignored)."""
    from autointerp.extract.subject_models import model_shape
    from autointerp.extract.summaries import exact_bytes, sketch_bytes

    shape = model_shape(config["subject"])
    if shape is None:
        return {}
    layers = config["subject"].get("layers", "all")
    n_layers = shape[0] if layers == "all" else len(layers)
    d, ex = shape[1], config["extraction"]
    n, t = int(config["corpus"]["n_excerpts"]), int(config["corpus"]["excerpt_tokens"])
    k, r, shards = int(ex["top_k"]), int(ex["random_n"]), int(ex["shards"])
    top = d * k * (t * 4 + 12)
    quantiles = exact_bytes(n, d) if ex.get("quantile_accuracy") is None else shards * sketch_bytes(
        ex["quantile_accuracy"], d)
    neurons = sum(v for v in sizes.values() if v)
    return {"shard states (deleted once merged)": n_layers * (shards * top + d * r * t * 4 + quantiles),
            "merged activations": n_layers * (top + d * r * t * 4 + d * 40),
            # 15 records per neuron (train, valid top, valid random) of t tokens: id, activation, ~6 B of text
            "records": neurons * 3 * int(config["records"]["n_examples_per_split"]) * t * 14}


def plan_lines(config: dict) -> list[str]:
    sizes = set_sizes(config)
    rows = cost_plan(config, sizes)
    scratch = scratch_plan(config, sizes)
    known = {k: v for k, v in sizes.items() if v}
    lines = [f"plan: {sum(known.values()):,} neurons ({', '.join(f'{k} {v:,}' for k, v in known.items())})"
             + ("" if len(known) == len(sizes) else " + sets sized by the activations")]
    by_role: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        acc = by_role.setdefault((r["stage"], r["role"]), [0.0, 0])
        acc[0], acc[1] = acc[0] + r["usd"], acc[1] + r["calls"]
    parts = [f"{stage} {role} ${usd:,.2f} ({calls:,} calls)" for (stage, role), (usd, calls) in by_role.items()]
    lines.append(f"plan: estimated cost ${sum(r['usd'] for r in rows):,.2f}: " + ", ".join(parts)
                 + " (a stand-in neuron's prompts; results/<run>/cost_estimate.csv counts the real ones before any "
                 "paid call)")
    if scratch:
        lines.append("plan: disk " + ", ".join(f"{k} {v / GB:,.1f} GB" for k, v in scratch.items()))
    return lines
