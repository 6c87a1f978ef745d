"""N2G's pattern trie: lines with one-token wildcards, wildcard merging, greedy backward prediction.

A *line* reads backwards from an activating token: ``(activating token, context_1, context_2, ...)``
where ``context_1`` is the token just before it, ``None`` is a wildcard standing for exactly one arbitrary
token, and the line ends with END(value), the normalised activation of the activating token.

``Trie.build(lines)`` inserts the lines in order, then runs ``merge_ignores`` once (spec §7.3): at every
node with a wildcard child ``I``, each specific sibling ``C`` hands its continuations (every path below it
that is longer than ``C -> END``) to ``I``; ``C`` is then removed unless it is itself a stopping point
(has an END). The breadth-first walk then descends into the merged children.

``Trie.predict(tokens)`` implements spec §8 exactly: for each position walk backwards, preferring an exact
child over the wildcard, never backtracking, the first token must be an activating node, and the value is
that of the deepest END passed on that single path (0 if none).

Duplicate paths (reference bug 2: first insertion silently wins) are aggregated: every END keeps all the
values inserted into it (including those copied by merging) and ``combine`` chooses ``"mean"`` (default),
``"max"`` or ``"first"`` (the reference's behaviour).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

COMBINE = ("mean", "max", "first")


@dataclass(frozen=True)
class Line:
    """One pattern; ``tokens[0]`` is the activating token, then context backwards (``None`` = wildcard)."""

    tokens: tuple
    importances: tuple
    activations: tuple
    value: float

    def __post_init__(self) -> None:
        if not self.tokens or self.tokens[0] is None:
            raise ValueError("a line starts with its activating token, never a wildcard")
        if self.tokens[-1] is None:
            raise ValueError("a line never ends with a wildcard (trailing wildcards are cut)")
        if not len(self.tokens) == len(self.importances) == len(self.activations):
            raise ValueError("tokens, importances and activations must have the same length")

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens), "importances": list(self.importances),
                "activations": list(self.activations), "value": self.value}

    @classmethod
    def from_dict(cls, d: dict) -> "Line":
        return cls(tuple(d["tokens"]), tuple(d["importances"]), tuple(d["activations"]), float(d["value"]))


def make_line(tokens: Sequence, importances: Sequence[float], activations: Sequence[float],
              value: float) -> Line:
    """A line from backward elements, with trailing wildcards cut (spec §7.1)."""
    n = len(tokens)
    while n > 1 and tokens[n - 1] is None:
        n -= 1
    return Line(tuple(tokens[:n]), tuple(float(x) for x in importances[:n]),
                tuple(float(x) for x in activations[:n]), float(value))


class Node:
    __slots__ = ("token", "depth", "children", "wildcard", "end_values", "importance", "activation", "activator")

    def __init__(self, token, depth: int):
        self.token = token            # str, None for a wildcard, "" for the root
        self.depth = depth
        self.children: dict[str, Node] = {}
        self.wildcard: Node | None = None
        self.end_values: list[float] | None = None
        self.importance = -np.inf
        self.activation = -np.inf
        self.activator = False

    def child(self, token) -> "Node | None":
        return self.wildcard if token is None else self.children.get(token)

    def get_or_add(self, token) -> "Node":
        node = self.child(token)
        if node is None:
            node = Node(token, self.depth + 1)
            if token is None:
                self.wildcard = node
            else:
                self.children[token] = node
        return node

    def all_children(self) -> list["Node"]:
        """Specific children in insertion order, then the wildcard."""
        out = list(self.children.values())
        if self.wildcard is not None:
            out.append(self.wildcard)
        return out

    def absorb(self, other: "Node") -> None:
        """Payload of a node inserted along the same path: importance/activation are maxima."""
        self.importance = max(self.importance, other.importance)
        self.activation = max(self.activation, other.activation)
        self.activator = self.activator or other.activator


def _paths(node: Node) -> Iterator[list[Node]]:
    """Every path from ``node`` (included) down to a node with an END, depth first, children in order."""
    stack = [(node, [node])]
    while stack:
        cur, path = stack.pop()
        if cur.end_values is not None:
            yield path
        for c in reversed(cur.all_children()):
            stack.append((c, path + [c]))


class Trie:
    """The prediction trie of one neuron (build with ``Trie.build``)."""

    def __init__(self, combine: str = "mean", activation_threshold: float = 0.5):
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
        self.combine = combine
        self.activation_threshold = activation_threshold
        self.root = Node("", 0)

    @classmethod
    def build(cls, lines: Iterable[Line], *, combine: str = "mean", activation_threshold: float = 0.5,
              merge: bool = True) -> "Trie":
        trie = cls(combine, activation_threshold)
        for line in lines:
            trie.insert(line)
        if merge:
            trie.merge_ignores()
        return trie

    def insert(self, line: Line) -> None:
        node = self.root
        for tok, imp, act in zip(line.tokens, line.importances, line.activations):
            node = node.get_or_add(tok)
            node.importance = max(node.importance, imp)
            node.activation = max(node.activation, act)
            node.activator = node.activator or act > self.activation_threshold
        node.end_values = (node.end_values or []) + [line.value]

    def _add_path(self, start: Node, path: Sequence[Node]) -> None:
        """Copy ``path`` (nodes, the last one with an END) below ``start``."""
        node = start
        for src in path:
            node = node.get_or_add(src.token)
            node.absorb(src)
        node.end_values = (node.end_values or []) + list(path[-1].end_values)

    def merge_ignores(self) -> None:
        queue = deque([self.root])
        while queue:
            node = queue.popleft()
            wild = node.wildcard
            if wild is not None:
                for tok, c in list(node.children.items()):
                    for path in list(_paths(c)):
                        if len(path) <= 1:  # C -> END only: nothing to hand over
                            continue
                        self._add_path(wild, path[1:])
                    if c.end_values is None:
                        del node.children[tok]
            queue.extend(node.all_children())

    def value(self, values: list[float]) -> float:
        if self.combine == "first":
            return values[0]
        if self.combine == "max":
            return max(values)
        return float(sum(values) / len(values))

    def search(self, tokens: Sequence[str], t: int) -> float:
        """Predicted normalised activation of ``tokens[t]`` given ``tokens[:t]`` (spec §8)."""
        node = self.root
        found = 0.0
        for i in range(t, -1, -1):
            nxt = node.children.get(tokens[i])
            if nxt is None:
                nxt = node.wildcard
            if nxt is None:
                break
            node = nxt
            if i == t and not node.activator:
                break
            if node.end_values is not None:
                found = self.value(node.end_values)
        return found

    def predict(self, tokens: Sequence[str]) -> np.ndarray:
        tokens = list(tokens)
        return np.array([self.search(tokens, t) for t in range(len(tokens))], dtype=float)

    def patterns(self) -> list[tuple[tuple, float]]:
        """Every root-to-END path as ((activating, context backwards...), value), depth first in order."""
        out = []
        for first in self.root.all_children():
            for path in _paths(first):
                out.append((tuple(n.token for n in path), self.value(path[-1].end_values)))
        return out

    def n_nodes(self) -> int:
        n, stack = 0, self.root.all_children()
        while stack:
            node = stack.pop()
            n += 1
            stack.extend(node.all_children())
        return n
