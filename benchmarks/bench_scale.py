"""The workflow at scale against a loopback endpoint with a fixed latency: explain and simulate for many neurons of
the embedded model in five formats, in chunks; then every explain and simulate job again (all answers cached).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scale.py [--neurons 512 --chunks 128 --latency 1.0
        --concurrency 16 --api-calls 4]

Prints: jobs, requests, the wall time of the run (records, prompts, explain, simulate, gathers, Table 2) against
the latency-bound ideal (requests x latency / (concurrency x api_calls jobs at once)), the CPU it used, response-cache
entries and size, and the rerun's requests (goal 0) and wall time. The extraction (120 excerpts of Python's docs)
runs first and is not timed.

Why these defaults: on a 2-core machine this script's loopback server (~8 ms of CPU per simulator request: a
~1,200-token echo with logprobs at every position, ~160 kB of JSON) and the client (~5 ms: parsing it, caching
the record's part) share the CPU with the jobs, so the machine serves ~140 requests/s at most. The ideal is only a
fair yardstick when the offered load (concurrency x api_calls / latency) stays well below that: 16 x 4 / 1.0 s =
64 requests/s. --neurons 512 --chunks 128 (a third of layer 0 in 4 chunks per format) then takes ~8 min; every
neuron (46,080, ~2.5 M requests) would take ~11 h at that load, and ``--spread`` (the neurons spread over all
30 layers, at least one chunk each) shows the per-job cost of small chunks.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fake_simulator import simulators_script  # noqa: E402
from loopback_server import LoopbackServer  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process (the loopback server's threads) and of every finished child (Snakemake, its jobs)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def snakemake(work: Path, cores: int, *args: str) -> tuple[float, float, str]:
    """(wall s, CPU s, log) of one Snakemake run."""
    started, cpu = time.perf_counter(), cpu_seconds()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), *args], cwd=work,
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit((proc.stdout + proc.stderr)[-4000:])
    return time.perf_counter() - started, cpu_seconds() - cpu, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, default=512)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--api-calls", type=int, default=4, help="API jobs at once (the api_calls resource)")
    ap.add_argument("--chunks", default="128", help="'layer' or a number of neurons per chunk (within a layer)")
    ap.add_argument("--spread", action="store_true", help="spread the neurons over all 30 layers (small chunks)")
    ap.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench_scale_"))
    work = tmp / "wf"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "src"]:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, work / name)
    if (ROOT / "data" / "models" / "smollm2-135m").exists():
        shutil.copytree(ROOT / "data" / "models" / "smollm2-135m", work / "data" / "models" / "smollm2-135m")
    d_mlp, n_layers = 1536, 30
    if args.spread:  # the first neurons of every layer: at least one chunk per layer, however few neurons
        per_layer = min(d_mlp, -(-args.neurons // n_layers))
        rows = [(layer, n) for layer in range(n_layers) for n in range(per_layer)][:args.neurons]
    else:  # whole layers, in order, as a paper-scale set fills its chunks
        rows = [(layer, n) for layer in range(n_layers) for n in range(d_mlp)][:args.neurons]
    (work / "neurons.csv").write_text("layer,neuron\n" + "".join(f"{a},{b}\n" for a, b in rows))
    with LoopbackServer(latency=args.latency, script=simulators_script) as server:
        role = {"provider": "openai", "model": "loop-model", "base_url": server.base_url, "api_key_env": None,
                "context_length": 8192, "concurrency": args.concurrency}
        config = {
            "subject": {"id": "smollm2-135m", "model": "embedded:smollm2-135m-instruct", "batch_size": 16},
            "corpus": {"id": "pydocs", "source": "python_docs", "n_excerpts": 120, "excerpt_tokens": 32},
            "extraction": {"top_k": 20, "random_n": 50},
            "neuron_sets": {"scale": {"kind": "csv", "path": "neurons.csv"}},
            "chunks": args.chunks if args.chunks == "layer" else int(args.chunks),
            "explainers": {"loop": dict(role)},
            "simulators": {"loop": {**role, "mode": "prompt_logprobs"}},
            "n2g": {"enabled": False},
            "llm": {"cache_dir": ".cache/llm"},
        }
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        resources = ("--resources", f"api_calls={args.api_calls}", "local_engine=2")
        # API jobs wait on the network: as many run at once as api_calls allows, whatever the machine's cores.
        cores = max(args.api_calls, 2)
        snakemake(work, cores, "results/smollm2-135m/pydocs/activations/manifest.json")  # extraction: not timed
        before = dict(server.counts)
        wall, cpu, out = snakemake(work, cores, "results/table2.csv", *resources)
        counts = {k: v - before.get(k, 0) for k, v in server.counts.items()}
        calls = sum(counts.values())
        jobs = out.count("\nrule ") + out.count("\nlocalrule ")
        ideal = calls * args.latency / (args.concurrency * args.api_calls)
        cache = work / ".cache" / "llm"
        entries = sum(1 for _ in cache.rglob("*.json"))
        size = sum(p.stat().st_size for p in cache.rglob("*.json"))
        print(f"{args.neurons} neurons x 5 formats, chunks {args.chunks}, latency {args.latency} s, concurrency "
              f"{args.concurrency} x {args.api_calls} jobs")
        print(f"jobs {jobs}; requests {calls:,} ({counts}); wall {wall:.0f} s; ideal {ideal:.0f} s; "
              f"RATIO wall/ideal {wall / ideal:.2f} (goal <= 1.3)")
        print(f"CPU {cpu:.0f} s = {cpu / (wall * os.cpu_count()):.0%} of {os.cpu_count()} cores over the wall time; "
              f"{1e3 * cpu / calls:.1f} ms CPU per request (jobs, client, cache, this loopback server)")
        print(f"cache: {entries:,} entries, {size / 1e6:.1f} MB")
        before = dict(server.counts)
        rerun_wall, _, rerun_out = snakemake(work, cores, "results/table2.csv", *resources,
                                             "--forcerun", "explain", "simulate_score")
        rerun_requests = sum(server.counts.values()) - sum(before.values())
        rerun_jobs = rerun_out.count("\nrule ") + rerun_out.count("\nlocalrule ")
        print(f"rerun (--forcerun explain simulate_score: {rerun_jobs} jobs, every answer from the cache): "
              f"requests {rerun_requests} (goal 0), wall {rerun_wall:.0f} s")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
