"""Scripted classification scorers for the loopback server: chat requests that list ``Excerpt i: ...`` lines under
an explanation get one ``i: 0|1`` line per excerpt.

- a model named ``*-perfect*``: answers from the true labels, which it works out itself from the run's records files:
  the request's excerpts name the neuron (its held-out records, in order, with the marks removed); an excerpt
  is activating when its maximum reaches the weakest held-out top record's, and fuzzing's marks are right when
  they are exactly the tokens at half the record's maximum or more.
- a model named ``*-coin*``: a fair coin per excerpt, from a hash of the request's text and the excerpt's number.
Any other request gets the server's default reply (None).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

OPEN, CLOSE = "<<", ">>"


def _records(root: Path) -> list[dict]:
    """Every neuron's held-out records under ``root`` (records/{set}.parquet files)."""
    import pyarrow.parquet as pq

    neurons: dict[tuple, list] = {}
    for path in sorted(root.rglob("records/*.parquet")):
        for r in pq.read_table(path).to_pylist():
            if r["split"] == "valid":
                neurons.setdefault((path.stem, r["layer"], r["neuron"]), []).append(r)
    return list(neurons.values())


def _shown(token: str) -> str:
    return token.replace("\r", "\\r").replace("\n", "\\n")  # the prompt keeps each excerpt on one line


def _marked(tokens, positions=()) -> str:
    return "".join(f"{OPEN}{_shown(t)}{CLOSE}" if i in positions else _shown(t) for i, t in enumerate(tokens))


class ScriptedScorers:
    def __init__(self):
        self.root: Path | None = None  # the run folder whose records the perfect scorer reads
        self.requests = 0

    def _truth(self, excerpts: list[str]) -> list[int]:
        strip = lambda text: text.replace(OPEN, "").replace(CLOSE, "")  # noqa: E731  (both sides: "<<" in code)
        for valid in _records(self.root):
            texts = [_marked(r["tokens"]) for r in valid]
            weakest_top = min(max(r["activations"]) for r in valid if r["source"] == "top")
            active = [r for r in valid if max(r["activations"]) >= weakest_top]
            if excerpts == texts:  # detection: the held-out records in order, unmarked
                return [int(max(r["activations"]) >= weakest_top) for r in valid]
            by_text = {strip(_marked(r["tokens"])): r for r in active}
            if list(dict.fromkeys(strip(e) for e in excerpts)) == list(by_text):
                labels = []  # fuzzing: each activating record, marked (twice: true marks and others)
                for shown in excerpts:
                    rec = by_text[strip(shown)]
                    peak = max(rec["activations"])
                    hot = {i for i, a in enumerate(rec["activations"]) if a >= 0.5 * peak}
                    labels.append(int(shown == _marked(rec["tokens"], hot)))
                return labels
        raise AssertionError(f"no neuron has the excerpts {excerpts[:2]}...")

    def __call__(self, path: str, body: dict):
        messages = body.get("messages") or []
        model = str(body.get("model", ""))
        if path != "/v1/chat/completions" or not ("-perfect" in model or "-coin" in model):
            return None
        last = str(messages[-1]["content"])
        excerpts = [line.split(": ", 1)[1] for line in last.splitlines() if line.startswith("Excerpt ")]
        self.requests += 1
        if "-perfect" in model:
            answers = self._truth(excerpts)
        else:
            answers = [hashlib.sha256(f"{last}|{i}".encode()).digest()[0] & 1 for i in range(len(excerpts))]
        text = "\n".join(f"{i}: {a}" for i, a in enumerate(answers, 1))
        return {"id": "chatcmpl-scorer", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
