"""The response cache at scale: put/get times at 0, 1M and 2M entries, largest folder, disk use and fill rate.

    PYTHONPATH=src python benchmarks/bench_cache.py [--dir DIR] [--entries 2000000] [--sample 400] [--keep]

Each entry is a realistic ~1.2 KB chat entry (system + user message, sampling parameters, a reply and its usage).
Filling millions of entries through put() (a temp file and an fsync each) would take hours, so the fill writes the
same JSON to the same paths (ResponseCache.path_for) directly, without temp file or fsync, one process per core.
The timed put()/get() calls are the real ones: put with its fsync, get of present keys (hits) and of absent keys
(misses, which also look in the first layout). Times are per call, in microseconds. The page cache is not dropped:
hits read entries written minutes earlier, as a rerun does on a machine with the RAM to hold them.
DIR (default: a new folder under /tmp) must not exist or be empty; it is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autointerp.common.io import canonical_json
from autointerp.llm.cache import CACHE_FORMAT, ResponseCache, cache_key

SYSTEM = ("We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
          "document. Look at the parts of the document the neuron activates for and summarize in a single "
          "sentence what the neuron is looking for. Don't list examples of words.")


def material(i: int) -> dict:
    tokens = "\n".join(f"tok{(i * 7 + j) % 997}\t{(i + j) % 11}" for j in range(32))
    return {"endpoint": "https://api.openai.com/v1", "model": "gpt-4o-mini", "op": "chat",
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"Neuron {i}\nActivations:\n<start>\n{tokens}\n<end>"}],
            "params": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 60, "seed": None, "logprobs": False,
                       "top_logprobs": None}, "sample_index": i % 5}


def response(i: int) -> dict:
    return {"text": f" the token sequences that end a quoted list of numbers, variant {i}", "finish_reason": "stop",
            "logprobs": None, "usage": {"prompt_tokens": 210 + i % 50, "completion_tokens": 14}}


def _fill(args: tuple[str, int, int]) -> int:
    """Write entries start..stop-1 the fast way: same file and path as put(), no temp file, no fsync."""
    root, start, stop = args
    cache = ResponseCache(root)
    for i in range(start, stop):
        m = material(i)
        key = cache_key(m)
        data = canonical_json({"format": CACHE_FORMAT, "key": key, "created": time.time(), "request": m,
                               "response": response(i)}).encode("utf-8")
        path = cache.path_for(key)
        try:
            f = open(path, "wb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "wb")
        with f:
            f.write(data)
    return stop - start


def fill(root: Path, start: int, stop: int, workers: int) -> float:
    """Entries start..stop-1; returns entries per second, counting the final sync (so that the timed puts that
    follow do not pay for flushing the fill's writes)."""
    chunk = 20_000
    jobs = [(str(root), a, min(a + chunk, stop)) for a in range(start, stop, chunk)]
    t0 = time.perf_counter()
    done = 0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for n in pool.imap_unordered(_fill, jobs):
            done += n
            if done % 200_000 < chunk:
                print(f"  filled {start + done:,} ({done / (time.perf_counter() - t0):,.0f}/s)", flush=True)
    os.sync()
    return (stop - start) / (time.perf_counter() - t0)


def stats_us(times: list[float]) -> str:
    us = sorted(t * 1e6 for t in times)
    p99 = us[min(len(us) - 1, int(0.99 * len(us)))]
    return f"median {statistics.median(us):7.0f}  mean {statistics.fmean(us):7.0f}  p99 {p99:7.0f}"


def timed(fn, items) -> list[float]:
    out = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


def measure(cache: ResponseCache, filled: int, sample: int, rng: random.Random, next_put: list[int]) -> None:
    """Real put (fsync) of `sample` new entries, then get of present and of absent keys."""
    put_ids = range(next_put[0], next_put[0] + sample)
    next_put[0] += sample
    puts = timed(lambda i: cache.put(cache_key(material(i)), material(i), response(i)), put_ids)
    present = [rng.randrange(filled) for _ in range(sample)] if filled else list(put_ids)
    hit_keys = [cache_key(material(i)) for i in present]
    hits = timed(cache.get, hit_keys)
    assert all(cache.get(k) is not None for k in hit_keys), "a filled entry is missing"
    misses = timed(cache.get, [f"{rng.getrandbits(256):064x}" for _ in range(sample)])
    claims = timed(lambda k: (cache.try_claim(k, 60.0), cache.release_claim(k)), hit_keys)
    print(f"at {filled:>9,} entries (us/call)\n"
          f"  put (fsync)   {stats_us(puts)}\n  get hit       {stats_us(hits)}\n"
          f"  get miss      {stats_us(misses)}\n  claim+release {stats_us(claims)}", flush=True)


def folder_sizes(root: Path) -> tuple[int, str, int]:
    """The most files in any one folder, that folder, and the most subfolders in any one folder."""
    most, where, most_dirs = 0, "", 0
    for d, dirs, files in os.walk(root):
        most_dirs = max(most_dirs, len(dirs))
        if len(files) > most:
            most, where = len(files), d
    return most, where, most_dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=None, help="cache folder to fill (default: new folder under /tmp)")
    ap.add_argument("--entries", type=int, default=2_000_000)
    ap.add_argument("--sample", type=int, default=400, help="timed calls per operation and checkpoint")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the filled folder")
    a = ap.parse_args()
    root = a.dir or Path(tempfile.mkdtemp(prefix="bench_cache_", dir="/tmp"))
    if root.exists() and any(root.iterdir()):
        sys.exit(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    need = a.entries * 5 * 1024  # a 4 KiB block per ~1 KB entry, plus folders and inodes
    free = shutil.disk_usage(root).free
    if free < 1.2 * need:
        sys.exit(f"{root}: {free / 2**30:.1f} GiB free, need ~{need / 2**30:.1f} GiB for {a.entries:,} entries")
    print(f"cache {root}, {a.entries:,} entries, {a.workers} fill workers, {free / 2**30:.0f} GiB free", flush=True)
    cache, rng = ResponseCache(root), random.Random(0)
    next_put = [10**9]  # timed puts use ids the fill never does
    try:
        measure(cache, 0, a.sample, rng, next_put)
        half = a.entries // 2
        rates = [fill(root, 0, half, a.workers)]
        measure(cache, half, a.sample, rng, next_put)
        rates.append(fill(root, half, a.entries, a.workers))
        measure(cache, a.entries, a.sample, rng, next_put)
        t = time.perf_counter()
        total = len(cache)
        len_s = time.perf_counter() - t
        most, where, most_dirs = folder_sizes(root)
        du = subprocess.run(["du", "-sh", str(root)], capture_output=True, text=True).stdout.split()[0]
        apparent = subprocess.run(["du", "-sh", "--apparent-size", str(root)], capture_output=True,
                                  text=True).stdout.split()[0]
        print(f"total entries {total:,} (len() took {len_s:.1f} s)\n"
              f"largest folder {most:,} entries ({os.path.relpath(where, root)}); at most {most_dirs} subfolders\n"
              f"disk use {du} (apparent size {apparent})\n"
              f"fill rate {rates[0]:,.0f}/s to {half:,}, {rates[1]:,.0f}/s to {a.entries:,} (fast path, no fsync)")
    finally:
        if not a.keep:
            t = time.perf_counter()
            subprocess.run(["rm", "-rf", str(root)], check=True)  # several times faster than shutil.rmtree
            print(f"removed {root} in {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
