"""Reference ("baseline") explanations per neuron, for explanation similarity (AdaCS) and side-by-side tables.

Four sources, each giving ``{(layer, neuron): Baseline}`` (or plain strings for the third):

* **CSV** (``load_csv_baselines``): the SEED input style ``layer,neuron,score,explanation`` (``score`` optional;
  header names case-insensitive, so ``Layer,Neuron`` works; a leading unnamed index column is ignored; another
  explanation column can be named, e.g. ``NeuronViewer``). Explanations are kept byte-for-byte, leading space and
  trailing period included, because the paper embeds them as-is.
* **NeuronViewer** (``fetch_neuronviewer``): the published GPT-4 explanation of a GPT-2 XL neuron and its
  published score, from ``{NEURONVIEWER_BASE}/{layer}/{neuron}.jsonl`` (one ``NeuronSimulationResults`` line:
  ``scored_explanations[0].explanation`` and ``...scored_simulation.ev_correlation_score``, as SEED's
  ``save_neuron_info.ipynb`` reads them). The raw file is cached per neuron under ``cache_dir/{layer}/{neuron}.jsonl``;
  offline (``HF_HUB_OFFLINE=1``) or on a network failure, an uncached neuron raises ``NeuronViewerUnavailable``
  telling the user to supply a CSV instead. Only meaningful for GPT-2 XL.
* **Top tokens** (``top_token_references``, the offline default): the tokens on which the neuron peaks in its
  top-activating records, most frequent first (``the tokens "of", "in" and "on"``). It is read off the data, so
  it is no prompt format's output and favours none by construction (a reference explainer prompted with the
  Original format rewards explanations that sound like Original's), and it costs no call.
* **Reference explainer** (``load_reference_explainer``): another explainer's explanations from the same run
  (explanations JSONL lines ``{layer, neuron, format, sample, explanation, valid}``), one designated format and
  sample (default ``Original``, sample 0).
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from autointerp.common.io import atomic_write_text
from autointerp.common.pinned import offline as is_offline_env

NEURONVIEWER_BASE = "https://openaipublic.blob.core.windows.net/neuron-explainer/data/explanations"
OFFLINE_ENV = "HF_HUB_OFFLINE"

Key = tuple[int, int]


@dataclass(frozen=True)
class Baseline:
    layer: int
    neuron: int
    explanation: str
    score: float | None = None  # the published / given score, if any (NaN kept as NaN)
    source: str = ""


class NeuronViewerUnavailable(RuntimeError):
    """A NeuronViewer explanation could not be had (offline, network failure, or no such neuron)."""


# ---------------------------------------------------------------------------------------------- CSV


def _parse_score(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError as e:
        raise ValueError(f"score {value!r} is not a number") from e


def load_csv_baselines(path, *, column: str = "explanation", score_column: str | None = "score",
                       source: str | None = None) -> dict[Key, Baseline]:
    """``{(layer, neuron): Baseline}`` from a CSV with ``layer``, ``neuron`` and ``column`` (default
    ``explanation``) columns, plus ``score_column`` if present. Column names match case-insensitively and with
    surrounding whitespace ignored. Explanation text is kept exactly as the CSV holds it; an empty cell is skipped.
    A (layer, neuron) given twice is an error."""
    path = Path(path)
    src = source or f"csv:{path.name}"
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty CSV") from None
        names = [h.strip().lower() for h in header]

        def find(name: str, required: bool) -> int | None:
            hits = [i for i, n in enumerate(names) if n == name.strip().lower()]
            if not hits:
                if required:
                    raise ValueError(f"{path}: no {name!r} column (columns: {header})")
                return None
            if len(hits) > 1:
                raise ValueError(f"{path}: column {name!r} appears {len(hits)} times")
            return hits[0]

        i_layer, i_neuron, i_expl = find("layer", True), find("neuron", True), find(column, True)
        i_score = find(score_column, False) if score_column else None
        out: dict[Key, Baseline] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row or all(c.strip() == "" for c in row):
                continue
            if len(row) < len(header):
                raise ValueError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
            try:
                key = (int(row[i_layer]), int(row[i_neuron]))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: layer/neuron must be integers: {e}") from None
            text = row[i_expl]
            if text == "":
                continue
            if key in out:
                raise ValueError(f"{path}:{lineno}: layer {key[0]} neuron {key[1]} appears twice")
            score = _parse_score(row[i_score]) if i_score is not None else None
            out[key] = Baseline(key[0], key[1], text, score, src)
    return out


# ---------------------------------------------------------------------------------------------- NeuronViewer


def neuronviewer_url(layer: int, neuron: int, base: str = NEURONVIEWER_BASE) -> str:
    return f"{base.rstrip('/')}/{int(layer)}/{int(neuron)}.jsonl"


def parse_neuronviewer(text: str, layer: int, neuron: int) -> Baseline:
    """The first explanation and its published score from a NeuronViewer explanations file (JSONL; the first
    non-empty line is a ``NeuronSimulationResults``)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), None)
    if line is None:
        raise ValueError(f"NeuronViewer file for layer {layer} neuron {neuron} is empty")
    try:
        res = json.loads(line)
        first = res["scored_explanations"][0]
        explanation = first["explanation"]
        raw_score = (first.get("scored_simulation") or {}).get("ev_correlation_score")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"NeuronViewer file for layer {layer} neuron {neuron} is not a NeuronSimulationResults: "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(explanation, str):
        raise ValueError(f"NeuronViewer layer {layer} neuron {neuron}: explanation is not a string")
    score = None if raw_score is None else float(raw_score)
    if score is not None and not math.isfinite(score):
        score = float("nan")
    return Baseline(int(layer), int(neuron), explanation, score, "neuronviewer")


def _cache_path(cache_dir, layer: int, neuron: int) -> Path:
    return Path(cache_dir) / str(int(layer)) / f"{int(neuron)}.jsonl"


def fetch_neuronviewer(layer: int, neuron: int, cache_dir, *, offline: bool | None = None, timeout_s: float = 30.0,
                       base: str = NEURONVIEWER_BASE) -> Baseline:
    """The NeuronViewer (GPT-4) explanation of GPT-2 XL neuron (layer, neuron), from ``cache_dir`` or downloaded
    (then cached as the raw JSONL). ``offline`` defaults to ``HF_HUB_OFFLINE``; offline or failing, an uncached
    neuron raises ``NeuronViewerUnavailable``."""
    path = _cache_path(cache_dir, layer, neuron)
    if path.is_file():
        return parse_neuronviewer(path.read_text(encoding="utf-8"), layer, neuron)
    url = neuronviewer_url(layer, neuron, base)
    hint = ("provide the reference explanations as a CSV with columns layer,neuron,explanation[,score] "
            "(e.g. the SEED inputs/neurons_to_evaluate.csv) instead, or place the file at " + str(path))
    if offline if offline is not None else is_offline_env():
        raise NeuronViewerUnavailable(f"offline ({OFFLINE_ENV}=1): cannot download {url}; {hint}")
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "autointerp"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise NeuronViewerUnavailable(f"NeuronViewer has no explanation for layer {layer} neuron {neuron} "
                                          f"({url}: HTTP 404); GPT-2 XL has layers 0-47, neurons 0-6399") from e
        raise NeuronViewerUnavailable(f"download failed: {url}: HTTP {e.code}; {hint}") from e
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as e:
        raise NeuronViewerUnavailable(f"download failed (network): {url}: {e}; {hint}") from e
    baseline = parse_neuronviewer(text, layer, neuron)  # validate before caching
    atomic_write_text(path, text)
    return baseline


def fetch_neuronviewer_many(neurons: Iterable[Key], cache_dir, **kwargs) -> dict[Key, Baseline]:
    """``fetch_neuronviewer`` for each (layer, neuron), sequentially (the files are small); the first failure raises."""
    return {(int(l), int(n)): fetch_neuronviewer(l, n, cache_dir, **kwargs) for l, n in neurons}  # noqa: E741


# ---------------------------------------------------------------------------------------------- reference explainer


def load_reference_explainer(paths, *, format: str = "Original", sample: int = 0,  # noqa: A002 - the field's name
                             include_invalid: bool = False) -> dict[Key, str]:
    """``{(layer, neuron): explanation}`` of one explainer's designated ``format`` and ``sample`` from its
    explanations JSONL file(s). Invalid explanations (``valid`` false, or no text) are left out unless
    ``include_invalid`` (then a non-empty ``raw_completion`` stands in for a missing explanation). Two different
    explanations for one neuron/format/sample is an error."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: dict[Key, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{lineno}: not JSON: {e}") from None
                if row.get("format") != format or int(row.get("sample", 0)) != int(sample):
                    continue
                text = row.get("explanation")
                if not include_invalid and (row.get("valid") is False or not isinstance(text, str) or not text):
                    continue
                if not isinstance(text, str) or not text:
                    text = row.get("raw_completion")
                    if not isinstance(text, str) or not text:
                        continue
                key = (int(row["layer"]), int(row["neuron"]))
                if key in out and out[key] != text:
                    raise ValueError(f"{path}:{lineno}: layer {key[0]} neuron {key[1]} format {format!r} sample "
                                     f"{sample} has two different explanations")
                out[key] = text
    return out


def as_texts(baselines: dict[Key, Baseline]) -> dict[Key, str]:
    """``{(layer, neuron): explanation}`` from ``{(layer, neuron): Baseline}``."""
    return {k: b.explanation for k, b in baselines.items()}


def top_token_references(records: dict, n_tokens: int) -> dict[Key, str]:
    """{(layer, neuron): 'the tokens "a", "b" and "c"'}: the tokens at which each top-activating record
    (train, and valid records drawn from the top) peaks, the ``n_tokens`` most frequent; ties go to the token
    with the higher activation, then alphabetical order, so the text is the same on every run."""
    from collections import Counter

    out: dict[Key, str] = {}
    for nid, entry in records.items():
        top = list(entry["train"]) + [r for r, s in zip(entry["valid"], entry["valid_sources"]) if s == "top"]
        counts: Counter = Counter()
        peak: dict[str, float] = {}
        for rec in top:
            i = max(range(len(rec.activations)), key=lambda j: rec.activations[j])
            token = rec.tokens[i].strip() or rec.tokens[i]
            counts[token] += 1
            peak[token] = max(peak.get(token, -math.inf), float(rec.activations[i]))
        chosen = sorted(counts, key=lambda tok: (-counts[tok], -peak[tok], tok))[:n_tokens]
        quoted = [json.dumps(tok, ensure_ascii=False) for tok in chosen]
        text = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
        out[(nid.layer, nid.neuron)] = f"the tokens {text}" if len(quoted) > 1 else f"the token {text}"
    return out


def degenerate_share(references: dict[Key, str]) -> float:
    """The share of neurons whose reference is the most common one (1/n when all differ; 1.0 when all are
    the same): a reference set where most neurons share one text cannot tell formats apart."""
    from collections import Counter

    if not references:
        return math.nan
    return Counter(references.values()).most_common(1)[0][1] / len(references)
