"""Graphviz DOT of a neuron graph (spec §10, the paper's layered picture) and a short text rendering.

The drawn graph is built from the lines with wildcards removed (consecutive important tokens become
parent and child), one invisible cluster per depth, nodes deduplicated by (depth, token) so the picture is
a layered DAG. Depth 0 holds the activating tokens, red by activation; deeper layers hold context tokens,
blue by importance; a node that ends a pattern is drawn bold. ``rankdir=RL``: activating tokens on the
right, context extending to the left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import deque

from autointerp.n2g.trie import Line


class _GNode:
    __slots__ = ("token", "depth", "children", "importance", "activation", "is_end")

    def __init__(self, token, depth):
        self.token, self.depth = token, depth
        self.children: dict = {}
        self.importance = float("-inf")
        self.activation = float("-inf")
        self.is_end = False


def _graph_trie(lines: list[Line]) -> _GNode:
    root = _GNode("", -1)
    for line in lines:
        node = root
        kept = [(t, i, a) for t, i, a in zip(line.tokens, line.importances, line.activations) if t is not None]
        for t, imp, act in kept:
            node = node.children.setdefault(t, _GNode(t, node.depth + 1))
            node.importance = max(node.importance, imp)
            node.activation = max(node.activation, act)
        node.is_end = True
    return root


def _label(token: str) -> str:
    text = json.dumps(token, ensure_ascii=False)
    if token.strip():
        text = text[1:-1]
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _scale(value: float, low: float) -> int:
    s = (value - low) / (1 - low) * 255 if low < 1 else 255
    return int(min(255, max(0, round(s))))


def to_dot(model, *, name: str = "neuron") -> str:
    """DOT text of ``model``'s graph (deterministic: nodes in breadth-first order of the fitting order)."""
    cfg = model.config
    root = _graph_trie(model._keyed(model.lines))
    nodes: dict = {}      # (depth, token) -> (id, first node seen)
    edges: list = []
    seen_edges = set()
    queue = deque((None, c) for c in root.children.values())
    while queue:
        parent, node = queue.popleft()
        key = (node.depth, node.token)
        if key not in nodes:
            nodes[key] = [f"n{len(nodes)}", node.activation, node.importance, node.is_end]
        else:  # merged box: strongest colour, bold if any merged node ends a pattern
            entry = nodes[key]
            entry[1], entry[2] = max(entry[1], node.activation), max(entry[2], node.importance)
            entry[3] = entry[3] or node.is_end
        if parent is not None:
            e = (nodes[parent][0], nodes[key][0])
            if e not in seen_edges:
                seen_edges.add(e)
                edges.append(e)
        queue.extend((key, c) for c in node.children.values())
    max_depth = max((d for d, _ in nodes), default=0)
    lines = [f'digraph "{name}" {{',
             "  graph [rankdir=RL, splines=spline, ranksep=1.5, nodesep=0.2];",
             '  node [shape=box, style=filled, fixedsize=true, width=2, height=0.75, fontname="Helvetica"];',
             "  edge [dir=back, penwidth=3];"]
    for depth in range(max_depth + 1):
        lines.append(f"  subgraph cluster_{max_depth - depth} {{")
        lines.append("    pencolor=white;")
        for (d, token), (nid, act, imp, is_end) in nodes.items():
            if d != depth:
                continue
            if depth == 0:
                s = _scale(act, max(0.0, cfg.activation_threshold - 0.2))
                rgb = (255, 255 - s, 255 - s)
            else:
                s = _scale(imp, max(0.1, cfg.importance_threshold - 0.2))
                rgb = (255 - s, 255 - s, 255)
            fill = "#%02x%02x%02x" % rgb
            font = "white" if rgb[1] < 130 else "black"
            label = _label(token)
            size = 18 if len(label) >= 12 else 25
            lines.append(f'    {nid} [label="{label}", fillcolor="{fill}", fontcolor={font}, '
                         f"fontsize={size}, penwidth={7 if is_end else 3}];")
        lines.append("  }")
    for a, b in edges:
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot_text: str, path=None) -> str:
    """SVG text of a DOT graph via the Graphviz ``dot`` binary (written to ``path`` if given)."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("the Graphviz 'dot' binary is not on PATH: install Graphviz (Debian/Ubuntu: "
                           "apt-get install graphviz) or render the DOT text elsewhere")
    svg = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True, check=True).stdout
    if path is not None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(svg)
    return svg


def _q(token) -> str:
    return "_" if token is None else json.dumps(token, ensure_ascii=False)


def describe(model, *, max_groups: int = 8, max_tokens: int = 6) -> str:
    """The main patterns in words: activating tokens grouped by their required context, strongest first.

    ``tokens " red", " blue" (after " the"); " green"`` means: " red" or " blue" right after " the", or
    " green" anywhere. ``_`` in a context is exactly one arbitrary token. Empty graph: "no pattern".
    """
    groups: dict = {}
    for path, value in model.trie.patterns():
        context = tuple(reversed(path[1:]))  # reading order
        toks = groups.setdefault(context, {})
        toks[path[0]] = max(value, toks.get(path[0], float("-inf")))
    if not groups:
        return "no pattern"
    ranked = sorted(groups.items(), key=lambda kv: -max(kv[1].values()))
    parts = []
    for context, toks in ranked[:max_groups]:
        names = [t for t, _ in sorted(toks.items(), key=lambda kv: -kv[1])]
        text = ", ".join(_q(t) for t in names[:max_tokens]) + (", ..." if len(names) > max_tokens else "")
        if context:
            text += " (after " + " ".join(_q(t) for t in context) + ")"
        parts.append(text)
    more = f"; and {len(ranked) - max_groups} more contexts" if len(ranked) > max_groups else ""
    return "tokens " + "; ".join(parts) + more
