"""Explanation similarity (AdaCS of Lee et al. 2023): cosine similarity of embeddings through an ``LLMClient``.

The paper embeds each explanation and its reference (the NeuronViewer GPT-4 explanation, or a puzzle's ground
truth) with ``text-embedding-ada-002`` and takes ``dot(a, b) / (|a| |b|)``. Strings are embedded **as-is** by
default: OpenAI's explanations often carry a leading space and a trailing period (``" words related to
comparison."``) and the reference notebook sends them unchanged, so we do too. Note that what "as-is" changes
depends on the model: ada-002 sees the leading space; sentence-transformers models such as all-MiniLM-L6-v2 strip
it themselves, but still see the trailing period.

Addition (not in the paper): ``normalise="strip"`` strips surrounding whitespace and one trailing period before
embedding, to ask how much of a similarity is punctuation.

Every embedding goes through ``client.embed`` so it lands in the persistent response cache. Its cache key is the
whole batch, so re-running the same texts in the same order hits the cache; ``batch_size=1`` makes the cache
per-text (more requests, but any new text set reuses every text already embedded).
"""

from __future__ import annotations

import asyncio
import math
from typing import Iterable, Sequence

import numpy as np

NORMALISE_MODES = (None, "none", "strip")


def normalise_text(text: str, mode: str | None = None) -> str:
    """``None``/``"none"``: the string unchanged (the paper). ``"strip"``: surrounding whitespace and one trailing
    period removed (``" words related to comparison. "`` -> ``"words related to comparison"``)."""
    if mode not in NORMALISE_MODES:
        raise ValueError(f"normalise must be one of {NORMALISE_MODES}, got {mode!r}")
    if mode == "strip":
        text = text.strip()
        if text.endswith("."):
            text = text[:-1].rstrip()
    return text


def cosine(a, b) -> float:
    """``dot(a, b) / (|a| |b|)`` on flattened float64 arrays, as the reference ``cosSim``; NaN if either is zero."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"cosine of vectors of different lengths: {x.shape[0]} vs {y.shape[0]}")
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    if denom == 0.0 or not math.isfinite(denom):
        return float("nan")
    return float(np.dot(x, y) / denom)


def cosine_rows(a, b) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays; NaN for rows with a zero vector."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"cosine_rows needs two (n, d) arrays of one shape, got {x.shape} and {y.shape}")
    denom = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("ij,ij->i", x, y) / denom
    out[denom == 0] = np.nan
    return out


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))  # first-occurrence order


BATCH_SIZE = 64  # texts per embedding request (the cost estimate counts requests with it)


async def embed_unique(client, texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> dict[str, np.ndarray]:
    """{text: vector} for the distinct texts, embedded in batches of ``batch_size`` (first-occurrence order; the
    batches run concurrently, bounded by the client's own concurrency limit)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    unique = _unique(texts)
    for t in unique:
        if not isinstance(t, str):
            raise TypeError(f"embed_texts needs strings, got {type(t).__name__}: {t!r}")
    batches = [unique[i:i + batch_size] for i in range(0, len(unique), batch_size)]
    results = await asyncio.gather(*(client.embed(b) for b in batches))
    out: dict[str, np.ndarray] = {}
    for batch, result in zip(batches, results):
        if len(result.vectors) != len(batch):
            raise ValueError(f"{len(result.vectors)} embeddings for {len(batch)} texts")
        for t, v in zip(batch, result.vectors):
            out[t] = np.asarray(v, dtype=np.float64)
    dims = {v.shape[0] for v in out.values()}
    if len(dims) > 1:
        raise ValueError(f"embeddings of different lengths: {sorted(dims)}")
    return out


async def embed_texts(client, texts: Sequence[str], batch_size: int = BATCH_SIZE, *,
                      normalise: str | None = None) -> np.ndarray:
    """(len(texts), d) float64 array, one row per input text in input order. Duplicates are embedded once."""
    prepared = [normalise_text(t, normalise) for t in texts]
    if not prepared:
        return np.zeros((0, 0), dtype=np.float64)
    vectors = await embed_unique(client, prepared, batch_size=batch_size)
    return np.stack([vectors[t] for t in prepared])


async def similarity_to_reference(client, pairs: Sequence[tuple[str | None, str | None]], *,
                                  batch_size: int = BATCH_SIZE, normalise: str | None = None) -> list[float]:
    """Cosine similarity (AdaCS) of each ``(text, reference)`` pair, in order. All distinct strings of all pairs
    are embedded once (references usually repeat across formats). A pair with a missing side (None, e.g. no
    valid explanation) gives NaN."""
    prepared = [(None if t is None else normalise_text(t, normalise),
                 None if r is None else normalise_text(r, normalise)) for t, r in pairs]
    wanted = [s for pair in prepared for s in pair if s is not None]
    vectors = await embed_unique(client, wanted, batch_size=batch_size) if wanted else {}
    return [float("nan") if t is None or r is None else cosine(vectors[t], vectors[r]) for t, r in prepared]
