"""Record renderers: the text that follows ``Activations:`` in one neuron block (explainer_anchors §2.2, §3.4).

A renderer takes a ``Block`` (records plus precomputed normalised values and selection masks) and
returns a string; it never changes the records. Register a new one with ``register_renderer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from autointerp.common.records import ActivationRecord
from autointerp.prompts.formats.records import excerpt_label, format_token_values


@dataclass(frozen=True)
class Block:
    records: Sequence[ActivationRecord]
    normalized: Sequence[Sequence[int]]  # 0..10 per token
    selected: Sequence[Sequence[bool]]  # per token: is it "highly activating" under the format's rule


Renderer = Callable[[Block], str]
RENDERERS: dict[str, Renderer] = {}


def register_renderer(name: str, fn: Renderer, *, replace: bool = False) -> Renderer:
    if name in RENDERERS and not replace:
        raise ValueError(f"renderer {name!r} is already registered (pass replace=True)")
    RENDERERS[name] = fn
    return fn


def _excerpts(block: Block, body: Callable[[ActivationRecord, Sequence[int], Sequence[bool]], str]) -> str:
    # Shared frame of the new formats: leading "\n", then per excerpt " Text excerpt - A:" and <start>text<end> .
    parts = [
        f"\n Text excerpt - {excerpt_label(i)}:\n<start>" + body(record, values, selected)
        for i, (record, values, selected) in enumerate(zip(block.records, block.normalized, block.selected))
    ]
    return "\n" + "".join(parts)


def _bracketed(record: ActivationRecord, selected: Sequence[bool]) -> str:
    return "".join(f"[{t}]" if s else t for t, s in zip(record.tokens, selected))


def _listed(record: ActivationRecord, selected: Sequence[bool]) -> str:
    # Bare comma: " the" keeps its own space, so lists read "aping, the, affecting".
    return ",".join(t for t, s in zip(record.tokens, selected) if s)


def render_original(block: Block) -> str:
    return format_token_values(block.records, block.normalized)


def render_summary(block: Block) -> str:
    return _excerpts(
        block, lambda r, v, s: "".join(r.tokens) + "<end> \n\nHighly activating tokens:\n" + _listed(r, s) + "\n"
    )


def render_highlight(block: Block) -> str:
    return _excerpts(block, lambda r, v, s: _bracketed(r, s) + "<end> \n")


def render_highlight_summary(block: Block) -> str:
    return _excerpts(
        block, lambda r, v, s: _bracketed(r, s) + "<end> \n\nHighly activating tokens:\n" + _listed(r, s) + "\n"
    )


def render_avhs(block: Block) -> str:
    def body(record: ActivationRecord, values: Sequence[int], selected: Sequence[bool]) -> str:
        pairs = ",".join(f"{t}\t{v}" for t, v, s in zip(record.tokens, values, selected) if s)
        return _bracketed(record, selected) + "<end> \n\nHighly activating tokens:\n" + pairs + "\n"

    return _excerpts(block, body)


register_renderer("original", render_original)
register_renderer("summary", render_summary)
register_renderer("highlight", render_highlight)
register_renderer("highlight_summary", render_highlight_summary)
register_renderer("avhs", render_avhs)
