"""Client overhead against the loopback server: N chat calls with fixed server latency at a given concurrency.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/bench_llm_loopback.py [--n 500 --latency 0.1 --concurrency 16]

Ideal wall time is n * latency / concurrency; the ratio wall/ideal measures everything the client adds
(HTTP, JSON, cache writes with fsync, semaphore, ledger). Goal: <= 1.2.
The server runs in its own process by default, like a real endpoint; --in-process shares the GIL with the client
and so measures client plus server overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
from loopback_server import LoopbackServer  # noqa: E402

from autointerp.llm import LLMClient, run_many  # noqa: E402


@contextmanager
def server(latency: float, in_process: bool) -> Iterator[tuple[str, callable]]:
    """Yields (base_url, stats) where stats() -> {"counts": {...}, "max_in_flight": n}."""
    if in_process:
        with LoopbackServer(latency=latency) as srv:
            yield srv.base_url, lambda: {"counts": dict(srv.counts), "max_in_flight": srv.max_in_flight}
        return
    proc = subprocess.Popen([sys.executable, str(TESTS / "loopback_server.py"), "--latency", str(latency)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        stats_url = f"http://127.0.0.1:{port}/loopback/stats"
        yield f"http://127.0.0.1:{port}/v1", lambda: json.load(urllib.request.urlopen(stats_url))
    finally:
        proc.stdin.close()  # the server exits when its stdin closes
        proc.wait(timeout=10)


async def bench(base_url: str, cache_dir: str, n: int, concurrency: int) -> tuple[float, LLMClient]:
    client = LLMClient.from_config("explainer", {
        "provider": "openai", "model": "loopback", "base_url": base_url, "api_key_env": None,
        "cache_dir": cache_dir, "concurrency": concurrency})
    msgs = [[{"role": "user", "content": f"Explain neuron {i}: activations on tokens ..."}] for i in range(n)]
    t0 = time.perf_counter()
    results = await run_many([client.chat(m, temperature=1.0, top_p=1.0, max_tokens=64) for m in msgs],
                             concurrency=n)
    wall = time.perf_counter() - t0
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise SystemExit(f"{len(errors)} calls failed, first: {errors[0]!r}")
    await client.aclose()
    return wall, client


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--in-process", action="store_true", help="run the server in this process (shares the GIL)")
    args = ap.parse_args()
    with server(args.latency, args.in_process) as (base_url, stats), tempfile.TemporaryDirectory() as cache_dir:
        wall, _ = asyncio.run(bench(base_url, cache_dir, args.n, args.concurrency))
        s = stats()
        ideal = args.n * args.latency / args.concurrency
        print(f"calls={args.n} latency={args.latency}s concurrency={args.concurrency} server="
              f"{'in-process' if args.in_process else 'subprocess'} requests={sum(s['counts'].values())} "
              f"max_in_flight={s['max_in_flight']}")
        print(f"wall={wall:.3f}s ideal={ideal:.3f}s ratio={wall / ideal:.3f}")
        before = sum(s["counts"].values())
        rerun, client2 = asyncio.run(bench(base_url, cache_dir, args.n, args.concurrency))
        print(f"rerun from cache: wall={rerun:.3f}s new_requests={sum(stats()['counts'].values()) - before} "
              f"cache_hits={client2.ledger.totals()['cache_hits']}")


if __name__ == "__main__":
    main()
