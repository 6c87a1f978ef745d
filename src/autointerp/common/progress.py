"""Progress of one job: ``k/N calls (c cached, f failed), r calls/s, ETA t`` log lines (or batches, with a rate in
tokens/s, for the extraction).

An LLM stage calls ``client.start_progress(n_expected_calls, label)``; the client ticks the Progress for every
finished call (cache hit, request or failure). Lines go to the logger ``autointerp.llm.progress`` (the
extraction's: ``autointerp.extract.progress``) at INFO, at most every ``interval_s`` seconds as items finish, and
always once when ``done`` reaches ``total``; with ``heartbeat`` a daemon thread also logs the line when nothing
finished for ``interval_s`` (one embedded-engine call can take 20 s). More items than expected (extra samples) are
fine: the line then shows k/N with k > N and no ETA.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("autointerp.llm.progress")


def format_duration(seconds: float) -> str:
    """``13 s``, ``4 min 05 s``, ``2 h 07 min``."""
    s = max(0, int(round(seconds)))
    if s < 100:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_rate(per_s: float) -> str:
    if per_s >= 10:
        return f"{per_s:.0f}"
    if per_s >= 1:
        return f"{per_s:.1f}"
    return f"{per_s:.2f}"


class Progress:
    """Counts finished calls against an expected total and logs them; thread-safe."""

    def __init__(self, total: int, what: str, interval_s: float = 5.0, *, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = False, unit: str = "calls",
                 rate_per_item: tuple[str, float] | None = None):
        """``unit``: what is counted (``calls`` also shows cached and failed ones). ``rate_per_item``: show the rate
        in another unit, e.g. ``("tokens", tokens per batch)``."""
        self.total = max(0, int(total))
        self.what = what
        self.unit, self.rate_per_item = unit, rate_per_item
        self.interval_s = float(interval_s)
        self.done = self.cached = self.failed = 0
        self._log = logger or log
        self._clock = clock
        self._t0 = clock()
        self._last_log = self._t0
        self._final_logged = False
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        if heartbeat and self.interval_s > 0:  # interval 0 logs every call already
            threading.Thread(target=self._beat, name="llm-progress", daemon=True).start()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval_s / 2):
            with self._lock:
                if self._final_logged:
                    return
                now = self._clock()
                if now - self._last_log < self.interval_s:
                    continue
                self._last_log = now
                line = self._line(now)
            self._log.info("%s", line)

    def tick(self, *, cached: bool = False, failed: bool = False) -> None:
        """One call finished."""
        with self._lock:
            self.done += 1
            self.cached += bool(cached)
            self.failed += bool(failed)
            now = self._clock()
            final = self.done == self.total and not self._final_logged
            if not final and now - self._last_log < self.interval_s:
                return
            self._last_log = now
            self._final_logged = self._final_logged or final
            line = self._line(now)
        self._log.info("%s", line)

    def finish(self) -> None:
        """Log the final state unless the line for done == total was already logged (e.g. fewer calls than
        expected: everything was answered otherwise, or the job failed early)."""
        self._stopped.set()
        with self._lock:
            if self._final_logged:
                return
            self._final_logged = True
            line = self._line(self._clock())
        self._log.info("%s", line)

    def line(self) -> str:
        with self._lock:
            return self._line(self._clock())

    def _line(self, now: float) -> str:
        elapsed = max(now - self._t0, 1e-9)
        rate = self.done / elapsed
        head = f"{self.what}: {self.done}/{self.total} {self.unit}"
        if self.unit == "calls":
            head += f" ({self.cached} cached, {self.failed} failed)"
        shown, per = self.rate_per_item or (self.unit, 1.0)
        head += f", {format_rate(rate * per)} {shown}/s"
        if self.done >= self.total:
            return f"{head}, took {format_duration(elapsed)}" if self.done == self.total else head
        if self.done == 0:
            return head
        return f"{head}, ETA {format_duration((self.total - self.done) / rate)}"
