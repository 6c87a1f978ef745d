"""Fitting an N2G graph for one neuron: prune, saliency, augment, lines (spec §3–§7).

All forward passes go through a ``NeuronProbe`` on token ids:

- one pass over all training examples together (their activations, recomputed so every number below
  comes from the same forward function; the stored ones are only compared, ``stats["stored_max_abs_diff"]``);
- pruning: one batch per pivot with the candidate left contexts (right-padded rows; in chunks of 16
  lengths, shortest first, stopping at the first chunk holding the answer);
- saliency: one batch per pruned prompt, L+1 rows (row 0 unmasked, row r masks token r-1);
- augmentation: one logits pass per pruned prompt (default substitute source), then one saliency batch
  holding every variant's L+1 rows.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from autointerp.common.records import ActivationRecord
from autointerp.extract.records import TokenDecoder
from autointerp.n2g.probe import neutral_token_id
from autointerp.n2g.trie import COMBINE, Line, make_line

WORD_PATTERN = r"\s?[^\W\d_]+(?:'[^\W\d_]+)?"


class TrainValidOverlapError(ValueError):
    """A record whose excerpt is in the neuron's validation set was passed for training."""


@dataclass(frozen=True)
class N2GConfig:
    """Parameters (defaults are the paper's effective values, spec §4–§7, unless noted)."""

    activation_threshold: float = 0.5   # a token with normalised activation > this starts a line
    importance_threshold: float = 0.75  # context with importance > this is kept, else a wildcard
    prune_keep: float = 0.5             # pruned pivot activation must be > this x the original
    max_context: int = 64               # longest left context tried (pivot included); reference: 30, step 5
    prune_step: int = 1                 # context lengths tried: step, 2*step, ... (+ the full prefix)
    prune_chunk: int | None = 16        # candidate lengths per forward batch (None: all in one batch)
    post_context: int = 5               # following tokens kept, within the pivot's sentence
    sentence_end: str = ".!\n"          # a token containing any of these ends a sentence
    augmentation: str = "model"         # "model" (subject's next-token candidates) or "off"
    augment_importance: float = 0.8     # positions with importance >= this for the pivot get substitutes
    max_substitutes: int = 5            # per position
    substitute_min_prob: float = 1e-5
    substitute_top_k: int = 200         # candidates examined per position (in probability order)
    word_pattern: str = WORD_PATTERN    # shape of a substitutable token and of its substitutes
    combine: str = "mean"               # duplicate END values: "mean", "max" or "first" (reference)
    normalise_tokens: bool = False      # reference orig: " The" / "The" / " the" -> "the"
    mask_token_id: int | None = None    # None: neutral_token_id(tokenizer)

    def __post_init__(self) -> None:
        if self.augmentation not in ("model", "off"):
            raise ValueError(f"augmentation must be 'model' or 'off', got {self.augmentation!r}")
        if self.combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {self.combine!r}")
        if self.max_context < 1 or self.prune_step < 1 or (self.prune_chunk is not None and self.prune_chunk < 1):
            raise ValueError("max_context, prune_step and prune_chunk must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- pruning

@dataclass
class PrunedPrompt:
    token_ids: list[int]      # left context + pivot + post-context
    pivot: int                # index of the pivot in token_ids
    start: int                # where the prompt starts in the source example
    source_pivot: int         # pivot index in the source example
    initial: float            # pivot activation in the full example
    truncated: float          # pivot activation in the pruned left context (no post-context)
    excerpt_id: int | None = None

    @property
    def scale(self) -> float:
        return self.initial / self.truncated


def _post_context(tokens: Sequence[str], pivot: int, n: int, ends: str) -> int:
    """Number of tokens after ``pivot`` kept: at most ``n``, stopping after the end of its sentence."""
    if any(ch in tokens[pivot] for ch in ends):
        return 0
    k = 0
    for j in range(pivot + 1, min(len(tokens), pivot + 1 + n)):
        k += 1
        if any(ch in tokens[j] for ch in ends):
            break
    return k


def candidate_lengths(pivot: int, config: N2GConfig) -> list[int]:
    """Left-context lengths tried for a pivot at index ``pivot``, shortest first."""
    full = pivot + 1
    lengths = [n for n in range(config.prune_step, min(full, config.max_context) + 1, config.prune_step)]
    if full <= config.max_context and (not lengths or lengths[-1] != full):
        lengths.append(full)
    return lengths


def prune(probe, token_ids: Sequence[int], activations: Sequence[float] | None = None, *,
          config: N2GConfig = N2GConfig(), tokens: Sequence[str] | None = None,
          excerpt_id: int | None = None, stats: dict | None = None) -> list[PrunedPrompt]:
    """Shortest left context keeping each pivot (argmax) the argmax with > ``prune_keep`` of its activation.

    Candidates go shortest first in batches of ``prune_chunk`` lengths (``None``: all in one batch), stopping
    at the first batch with a passing candidate: the result is the same, but short contexts (the usual
    case) cost one small batch instead of ~length² tokens. Nothing is returned for an example whose
    maximum is <= 0, and a pivot is dropped (``stats["n_prune_failed"]``) when no candidate up to
    ``max_context`` passes; with ``max_context`` >= the example length this never happens, because the
    full prefix reproduces the original activation exactly (causal model).
    """
    ids = np.asarray(token_ids, dtype=np.int64)
    acts = probe.activations(ids[None])[0] if activations is None else np.asarray(activations, dtype=float)
    tokens = list(tokens) if tokens is not None else TokenDecoder(probe.tokenizer)(ids)
    top = float(acts.max()) if len(acts) else 0.0
    if top <= 0:
        return []
    pad = config.mask_token_id if config.mask_token_id is not None else neutral_token_id(probe.tokenizer)
    out = []
    for p in np.flatnonzero(acts >= top):
        p = int(p)
        lengths = candidate_lengths(p, config)
        chunk = config.prune_chunk or len(lengths)
        chosen = None
        for c in range(0, len(lengths), chunk):
            part = lengths[c:c + chunk]
            batch = np.full((len(part), max(part)), pad, dtype=np.int64)
            for r, n in enumerate(part):
                batch[r, :n] = ids[p - n + 1:p + 1]
            cand = probe.activations(batch)
            for r, n in enumerate(part):
                row = cand[r, :n]  # real positions only (reference bug 9: argmax over padding)
                if row[-1] >= row.max() and row[-1] > config.prune_keep * acts[p]:
                    chosen = (n, float(row[-1]))
                    break
            if chosen is not None:
                break
        if chosen is None:
            if stats is not None:
                stats["n_prune_failed"] = stats.get("n_prune_failed", 0) + 1
            continue
        n, truncated = chosen
        post = _post_context(tokens, p, config.post_context, config.sentence_end)
        start = p - n + 1
        out.append(PrunedPrompt([int(t) for t in ids[start:p + 1 + post]], n - 1, start, p, float(acts[p]),
                                truncated, excerpt_id))
    return out


# ---------------------------------------------------------------------------------------------- saliency

def saliency_batch(token_ids: Sequence[int], mask_id: int) -> np.ndarray:
    """(L+1, L) ids: row 0 is the prompt, row r has token r-1 replaced by ``mask_id``."""
    ids = np.asarray(token_ids, dtype=np.int64)
    batch = np.repeat(ids[None], len(ids) + 1, axis=0)
    batch[np.arange(1, len(ids) + 1), np.arange(len(ids))] = mask_id
    return batch


def importance_matrix(acts: np.ndarray) -> np.ndarray:
    """Imp[k, j] = 1 - act(j | token k masked) / act(j) from the (L+1, L) saliency activations.

    Columns with act(j) <= 0 are 0 (reference bug 7: dividing by a zero or negative activation gives
    meaningless or sign-flipped importances); only positive (activating) columns are ever used.
    """
    orig, masked = acts[0], acts[1:]
    imp = np.zeros_like(masked)
    pos = orig > 0
    imp[:, pos] = 1.0 - masked[:, pos] / orig[pos]
    return imp


def saliency(probe, prompts: Sequence[Sequence[int]], mask_id: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(activations, importance matrix) of each prompt, all in ONE forward pass (prompts right-padded)."""
    if not prompts:
        return []
    longest = max(len(p) for p in prompts)
    blocks = []
    for p in prompts:
        b = saliency_batch(p, mask_id)
        blocks.append(np.pad(b, ((0, 0), (0, longest - len(p))), constant_values=mask_id))
    acts = probe.activations(np.concatenate(blocks))
    out, row = [], 0
    for p in prompts:
        a = acts[row:row + len(p) + 1, :len(p)]
        row += len(p) + 1
        out.append((a[0].copy(), importance_matrix(a)))
    return out


# ------------------------------------------------------------------------------------------ augmentation

class SubstituteSource(Protocol):
    """Proposes replacement token ids (subject vocabulary) for some positions of a prompt."""

    def __call__(self, token_ids: Sequence[int], positions: Sequence[int], n: int) -> dict[int, list[int]]: ...


def _shape(s: str) -> tuple[str, bool]:
    lead = s[: len(s) - len(s.lstrip())]
    first = next((ch for ch in s if ch.isalpha()), "")
    return lead, first.isupper()


class NextTokenSubstitutes:
    """Default substitute source: a causal LM's most probable next tokens at each position.

    For position k (k >= 1) the candidates are the tokens the model predicts after ``token_ids[:k]``, in
    descending probability (ties by id), keeping those with probability >= ``min_prob`` that match
    ``word_pattern`` with the same leading whitespace and first-letter case as the original, and that
    differ from it (reference bug 3); at most ``n`` per position. Position 0 has no left context and gets
    none. The paper used DistilBERT (bidirectional, other vocabulary, not available offline); this needs
    only the subject, and a substitute is one token, so every variant has the original's length and the
    positional importance inheritance of spec §7.1 is exact (reference bug 5).
    """

    def __init__(self, logits_fn: Callable, tokenizer, *, top_k: int = 200, min_prob: float = 1e-5,
                 word_pattern: str = WORD_PATTERN):
        self.logits_fn = logits_fn
        self.decode = TokenDecoder(tokenizer)
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.top_k = top_k
        self.min_prob = min_prob
        self.word = re.compile(word_pattern)

    @classmethod
    def from_probe(cls, probe, config: N2GConfig = N2GConfig()) -> "NextTokenSubstitutes":
        return cls(probe.logits, probe.tokenizer, top_k=config.substitute_top_k,
                   min_prob=config.substitute_min_prob, word_pattern=config.word_pattern)

    def __call__(self, token_ids: Sequence[int], positions: Sequence[int], n: int) -> dict[int, list[int]]:
        positions = [k for k in positions if k >= 1]
        if not positions or n <= 0:
            return {}
        logits = np.asarray(self.logits_fn(np.asarray(token_ids, dtype=np.int64)[None])[0], dtype=np.float64)
        out = {}
        for k in positions:
            orig = self.decode([token_ids[k]])[0]
            if not self.word.fullmatch(orig):
                continue
            z = logits[k - 1] - logits[k - 1].max()
            probs = np.exp(z) / np.exp(z).sum()
            top = min(self.top_k, len(probs))
            idx = np.argpartition(-probs, top - 1)[:top]
            idx = idx[np.lexsort((idx, -probs[idx]))]
            subs = []
            for tid in idx:
                if probs[tid] < self.min_prob or len(subs) >= n:
                    break
                tid = int(tid)
                if tid == token_ids[k] or tid in self.special:
                    continue
                cand = self.decode([tid])[0]
                if cand != orig and self.word.fullmatch(cand) and _shape(cand) == _shape(orig):
                    subs.append(tid)
            if subs:
                out[k] = subs
        return out


def augment(prompt: PrunedPrompt, imp: np.ndarray, substitutes: SubstituteSource, special: set,
            config: N2GConfig) -> list[list[int]]:
    """Variants of the prompt with one important token (at or before the pivot) substituted, deduplicated."""
    ids = prompt.token_ids
    positions = [k for k in range(prompt.pivot + 1)
                 if imp[k, prompt.pivot] >= config.augment_importance and ids[k] not in special]
    proposals = substitutes(ids, positions, config.max_substitutes)
    seen = {tuple(ids)}
    variants = []
    for k in sorted(proposals):
        for tid in proposals[k][: config.max_substitutes]:
            v = list(ids)
            v[k] = int(tid)
            if tuple(v) not in seen:
                seen.add(tuple(v))
                variants.append(v)
    return variants


# ------------------------------------------------------------------------------------------------- lines

def sample_lines(samples: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray]], special: Sequence[bool],
                 config: N2GConfig) -> list[Line]:
    """Lines of one sample set (spec §7.1): ``samples[0]`` is the pruned prompt, the rest its variants,
    each ``(tokens, normalised activations, importance matrix)``; all have the same length.

    Important context = importance > threshold in that sample, or in the original (positional inheritance,
    exact here because variants keep the length). Special tokens (BOS, document separators) are never
    important: they become wildcards instead of being skipped, so offsets stay those of the text.
    """
    _, _, imp0 = samples[0]
    n = len(special)
    important0 = imp0 > config.importance_threshold
    lines = []
    for tokens, acts, imp in samples:
        if len(tokens) != n:
            raise ValueError("variants must have the same length as their original")
        for i in np.flatnonzero(acts > config.activation_threshold):
            i = int(i)
            toks, imps, own = [], [], []
            for pos in range(i, -1, -1):
                keep = pos == i or ((imp[pos, i] > config.importance_threshold or important0[pos, i])
                                    and not special[pos])
                toks.append(tokens[pos] if keep else None)
                imps.append(imp[pos, i])
                own.append(acts[pos])
            lines.append(make_line(toks, imps, own, float(acts[i])))
    return lines


# --------------------------------------------------------------------------------------------------- fit

def _ids_of(record: ActivationRecord, token_ids) -> list[int]:
    if record.excerpt_id is None:
        raise ValueError("training records need excerpt ids (to look up token ids and to keep valid out)")
    if isinstance(token_ids, Mapping):
        ids = token_ids[record.excerpt_id]
    else:
        ids = np.asarray(token_ids)[record.excerpt_id]
    ids = [int(t) for t in ids]
    if len(ids) != len(record.tokens):
        raise ValueError(f"excerpt {record.excerpt_id}: {len(ids)} token ids but {len(record.tokens)} tokens")
    return ids


def check_disjoint(train: Sequence[ActivationRecord], forbidden_excerpt_ids) -> None:
    """Raise ``TrainValidOverlapError`` if a training record's excerpt id is forbidden (a valid one)."""
    forbidden = {int(e) for e in forbidden_excerpt_ids if e is not None}
    bad = sorted({int(r.excerpt_id) for r in train if r.excerpt_id is not None and int(r.excerpt_id) in forbidden})
    if bad:
        raise TrainValidOverlapError(f"excerpts {bad} are validation excerpts and cannot be used for training")


def fit_neuron(probe, records: Sequence[ActivationRecord], token_ids, *, a_max: float | None = None,
               forbidden_excerpt_ids=(), config: N2GConfig = N2GConfig(),
               substitutes: SubstituteSource | None = None):
    """Fit the N2G graph of ``probe``'s neuron on ``records`` (training only).

    ``token_ids``: {excerpt_id: ids} or the corpus (N, T) array indexed by excerpt id. ``a_max``: the
    normaliser (the neuron's max activation; default the max over these records). A record whose excerpt
    id is in ``forbidden_excerpt_ids`` raises ``TrainValidOverlapError``. ``substitutes`` overrides the
    default augmentation source (``NextTokenSubstitutes`` on the subject) when augmentation is on.
    """
    from autointerp.n2g.model import N2GModel

    started = time.perf_counter()
    fwd0 = probe.log.seconds if hasattr(probe, "log") else 0.0
    check_disjoint(records, forbidden_excerpt_ids)
    if not records:
        raise ValueError("no training records")
    decode = TokenDecoder(probe.tokenizer)
    special_ids = set(getattr(probe.tokenizer, "all_special_ids", []) or [])
    mask_id = config.mask_token_id if config.mask_token_id is not None else neutral_token_id(probe.tokenizer)
    if config.augmentation == "model" and substitutes is None:
        substitutes = NextTokenSubstitutes.from_probe(probe, config)
    ids_list = [_ids_of(r, token_ids) for r in records]
    longest = max(len(x) for x in ids_list)
    batch = np.full((len(ids_list), longest), mask_id, dtype=np.int64)
    for i, x in enumerate(ids_list):
        batch[i, :len(x)] = x
    all_acts = probe.activations(batch)
    stats: dict = {"n_examples": len(records), "n_pivots": 0, "n_prune_failed": 0, "n_variants": 0,
                   "prune_lengths": [], "stored_max_abs_diff": 0.0}
    for r, x, acts in zip(records, ids_list, all_acts):
        stats["stored_max_abs_diff"] = max(stats["stored_max_abs_diff"], float(np.max(np.abs(
            np.asarray(r.activations, dtype=float) - acts[:len(x)]))))
    if a_max is None:
        a_max = max(float(a[:len(x)].max()) for a, x in zip(all_acts, ids_list))
    if not a_max > 0:
        raise ValueError(f"a_max must be > 0 (got {a_max}): the neuron never activates on these records")
    lines: list[Line] = []
    for r, x, acts in zip(records, ids_list, all_acts):
        tokens = decode(x)
        for pp in prune(probe, x, acts[:len(x)], config=config, tokens=tokens, excerpt_id=r.excerpt_id,
                        stats=stats):
            stats["n_pivots"] += 1
            stats["prune_lengths"].append(pp.pivot + 1)
            (acts0, imp0), = saliency(probe, [pp.token_ids], mask_id)
            prompts = [pp.token_ids]
            if config.augmentation != "off" and substitutes is not None:
                prompts += augment(pp, imp0, substitutes, special_ids, config)
            stats["n_variants"] += len(prompts) - 1
            results = [(acts0, imp0)] + saliency(probe, prompts[1:], mask_id)
            samples = [(decode(p), a * pp.scale / a_max, imp) for p, (a, imp) in zip(prompts, results)]
            special = [t in special_ids for t in pp.token_ids]
            lines.extend(sample_lines(samples, special, config))
    stats["n_lines"] = len(lines)
    stats["seconds"] = time.perf_counter() - started
    stats["forward_seconds"] = (probe.log.seconds - fwd0) if hasattr(probe, "log") else None
    return N2GModel(lines=lines, a_max=float(a_max), config=config, stats=stats)
