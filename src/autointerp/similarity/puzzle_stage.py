"""Neuron Puzzles in the pipeline: puzzle sets (official file, download, or generated offline from the corpus),
their explainer prompts in every format, and the explain stage reused as is.

A puzzle is explained like a neuron: all of its sentences are the records and the highlight cutoff is 1 (as in
the reference's puzzle runs); each (puzzle, format) gets ``samples`` explanations (3 in the paper).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autointerp.common.io import atomic_write_text
from autointerp.common.snakemake_io import RuleIO
from autointerp.prompts.stage import PromptSettings, resolve_format
from autointerp.similarity.puzzles import fetch_official_puzzles, generate_puzzles, load_puzzles, puzzles_to_json

PUZZLE_CUTOFF = 1.0
GENERATOR_EXCERPTS = 2000  # corpus excerpts the generator draws its sentences from


def run_puzzle_set(settings, io: RuleIO) -> dict:
    """Rule puzzle_set; ``settings``: SimilaritySettings with its ``puzzle_set`` part."""
    n = build_puzzle_set(dict(settings.puzzle_set), io.outputs[0], corpus_path=io.input.get("corpus"),
                         model_dir=io.input.get("model"))
    return {"puzzles": n}


def run_render_puzzle_prompts(settings: PromptSettings, io: RuleIO) -> dict:
    n = render_puzzle_prompts(io.inputs[0], settings.format, settings.spec, io.outputs[0],
                              encoding=settings.encoding, context_length=settings.context_length,
                              max_completion_tokens=settings.max_completion_tokens)
    return {"puzzle_prompts": n, "format": settings.format}


def build_puzzle_set(spec: dict, out_path, *, corpus_path=None, model_dir=None) -> int:
    """Write the configured puzzle set to ``out_path`` in the official puzzles.json format."""
    source = spec["source"]
    if source == "generated":
        from autointerp.extract.corpus import read_token_ids
        from autointerp.extract.records import TokenDecoder
        from autointerp.extract.subject_models import load_decoder

        decode = TokenDecoder(load_decoder(model_dir))
        token_ids = read_token_ids(corpus_path)
        excerpts = [decode(row) for row in token_ids[:GENERATOR_EXCERPTS]]
        puzzles = generate_puzzles(excerpts, rules=spec.get("rules"), seed=int(spec.get("seed", 0)),
                                   sentences_per_puzzle=int(spec.get("sentences_per_puzzle", 10)),
                                   max_tokens=spec.get("max_tokens", 32))
    elif source == "official":
        puzzles = load_puzzles(fetch_official_puzzles(spec.get("cache_dir", ".cache/puzzles")))
    elif source == "file":
        puzzles = load_puzzles(spec["path"])
    else:
        raise ValueError(f"unknown puzzle source {source!r} (generated, official, file)")
    names = spec.get("names")
    if names:
        puzzles = [p for p in puzzles if p.name in set(names)]
    if not puzzles:
        raise ValueError(f"puzzle set {spec} is empty")
    puzzles_to_json(puzzles, out_path)
    return len(puzzles)


def render_puzzle_prompts(puzzles_path, format_name: str, format_spec: dict | None, out_path, *,
                          encoding: str = "cl100k_base", context_length: int | None = 4097,
                          max_completion_tokens: int = 60) -> int:
    """One prompt line per puzzle (``neuron`` = the puzzle's index, ``puzzle`` = its name)."""
    from autointerp.prompts.formats import render

    fmt = resolve_format(format_name, format_spec)
    lines = []
    for index, puzzle in enumerate(load_puzzles(puzzles_path)):
        rendered = render(fmt, puzzle.records, cutoff=PUZZLE_CUTOFF, context_limit=context_length,
                          max_completion_tokens=max_completion_tokens, encoding=encoding)
        from autointerp.common.records import NeuronId

        line = rendered.to_json_dict(NeuronId(0, index), format_name)
        line.update({"puzzle": puzzle.name, "ground_truth": puzzle.explanation})
        lines.append(json.dumps(line, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    atomic_write_text(out_path, "".join(line + "\n" for line in lines))
    return len(lines)


def puzzle_stats(puzzles_path) -> dict:
    puzzles = load_puzzles(puzzles_path)
    return {"puzzles": len(puzzles), "sentences": int(sum(len(p.records) for p in puzzles)),
            "max_activation": float(max(np.max(r.activations) for p in puzzles for r in p.records))}


def puzzle_set_name(path) -> str:
    return Path(path).stem
