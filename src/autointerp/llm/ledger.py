"""Usage ledger: one record per call (cache hit, miss or failure) and cost estimates."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def estimate_cost(prompt_tokens: int, completion_tokens: int, price_in: float, price_out: float) -> float:
    """Cost in the price unit (USD) given prices per 1M input and output tokens."""
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000


@dataclass(frozen=True)
class UsageRecord:
    role: str
    model: str
    operation: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time of the call, including queueing and retries
    cache_hit: bool
    attempts: int  # HTTP attempts made (0 for a cache hit)
    cost_usd: float  # 0 for cache hits: nothing was billed
    cache_key: str
    timestamp: float
    error: str | None = None


_SUMS = ("prompt_tokens", "completion_tokens", "latency_s", "cost_usd", "attempts")


class Ledger:
    """In-memory, thread-safe; each process (Snakemake job) writes its own JSONL file."""

    def __init__(self) -> None:
        self._records: list[UsageRecord] = []
        self._lock = threading.Lock()

    def record(self, rec: UsageRecord) -> None:
        with self._lock:
            self._records.append(rec)

    @property
    def records(self) -> list[UsageRecord]:
        with self._lock:
            return list(self._records)

    def totals(self) -> dict[str, Any]:
        """Overall and per-role sums. Token sums cover every successful call (hits included: they say what the
        work needed); `billed_*` and `cost_usd` cover only calls that reached the endpoint."""
        records = self.records

        def summarise(rs: list[UsageRecord]) -> dict[str, Any]:
            ok = [r for r in rs if r.error is None]
            billed = [r for r in ok if not r.cache_hit]
            out: dict[str, Any] = {
                "calls": len(rs),
                "cache_hits": sum(r.cache_hit for r in rs),
                "requests": len(billed),
                "errors": len(rs) - len(ok),
                "billed_prompt_tokens": sum(r.prompt_tokens for r in billed),
                "billed_completion_tokens": sum(r.completion_tokens for r in billed),
            }
            for k in _SUMS:
                out[k] = sum(getattr(r, k) for r in rs)
            return out

        totals = summarise(records)
        totals["by_role"] = {role: summarise([r for r in records if r.role == role])
                             for role in sorted({r.role for r in records})}
        return totals

    def write_jsonl(self, path: str | os.PathLike[str]) -> Path:
        """Atomic write (temp file + rename) so a killed job never leaves half a ledger."""
        from autointerp.common.io import atomic_write_text

        atomic_write_text(path, "".join(json.dumps(dataclasses.asdict(r), sort_keys=True) + "\n"
                                        for r in self.records))
        return Path(path)
