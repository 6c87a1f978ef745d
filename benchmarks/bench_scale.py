"""The workflow at scale against a loopback endpoint with a fixed latency: explain and simulate for many neurons of
the embedded model in five formats, in chunks, then every explain and simulate job again (all answers cached).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scale.py [--neurons 1536 --latency 0.25 --concurrency 32]

Prints: jobs, calls, wall time of the LLM stages vs the latency-bound ideal (calls x latency / (concurrency x
api_calls jobs at once)), response-cache entries and size, and for the rerun the requests the server saw (goal 0)
and its wall time. The neuron set spreads ``--neurons`` over the 30 layers (the first neurons of each; a csv set,
chunked per layer); 46,080 (every neuron) works too but makes ~2.5 M simulator calls, beyond what a 2-core machine's client
processes can issue in an afternoon. The extraction (not timed here) runs first on 120 excerpts of Python's docs.
"""

from __future__ import annotations

import argparse
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


def snakemake(work: Path, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=work, capture_output=True,
                          text=True)
    if proc.returncode:
        sys.exit((proc.stdout + proc.stderr)[-4000:])
    return time.perf_counter() - started, proc.stdout + proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--neurons", type=int, default=1536)
    ap.add_argument("--latency", type=float, default=0.25)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--api-calls", type=int, default=4, help="API jobs at once (the api_calls resource)")
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
    per_layer = min(d_mlp, -(-args.neurons // n_layers))  # the first neurons of every layer
    rows = [(layer, n) for layer in range(n_layers) for n in range(per_layer)][:args.neurons]
    (work / "neurons.csv").write_text("layer,neuron\n" + "".join(f"{a},{b}\n" for a, b in rows))
    with LoopbackServer(latency=args.latency, script=simulators_script) as server:
        role = {"provider": "openai", "model": "loop-model", "base_url": server.base_url, "api_key_env": None,
                "context_length": 8192, "concurrency": args.concurrency}
        config = {
            "subject": {"id": "smollm2-135m", "model": "embedded:smollm2-135m-instruct", "batch_size": 16},
            "corpus": {"id": "pydocs", "source": "python_docs", "n_excerpts": 120, "excerpt_tokens": 32},
            "extraction": {"top_k": 20, "random_n": 50},
            "neuron_sets": {"scale": {"kind": "csv", "path": "neurons.csv"}},
            "chunks": "layer",
            "explainers": {"loop": dict(role)},
            "simulators": {"loop": {**role, "mode": "prompt_logprobs"}},
            "n2g": {"enabled": False},
            "llm": {"cache_dir": ".cache/llm"},
        }
        (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        resources = ("--resources", f"api_calls={args.api_calls}", "local_engine=2")
        snakemake(work, "results/smollm2-135m/pydocs/activations/manifest.json")  # extraction: not timed
        before = dict(server.counts)
        wall, out = snakemake(work, "results/table2.csv", *resources)
        counts = {k: v - before.get(k, 0) for k, v in server.counts.items()}
        calls = sum(counts.values())
        jobs = out.count("\nrule ") + out.count("\nlocalrule ")
        ideal = calls * args.latency / (args.concurrency * args.api_calls)
        cache = work / ".cache" / "llm"
        entries = sum(1 for _ in cache.rglob("*.json"))
        size = sum(p.stat().st_size for p in cache.rglob("*.json"))
        print(f"{args.neurons} neurons x 5 formats, chunks per layer, latency {args.latency} s, concurrency "
              f"{args.concurrency} x {args.api_calls} jobs")
        print(f"jobs {jobs}; requests {calls:,} ({counts}); wall {wall:.0f} s; ideal {ideal:.0f} s; "
              f"RATIO wall/ideal {wall / ideal:.2f} (goal <= 1.3)")
        print(f"cache: {entries:,} entries, {size / 1e6:.1f} MB")
        before = dict(server.counts)
        shutil.rmtree(work / "results" / "smollm2-135m" / "pydocs" / "explanations")
        rerun_wall, _ = snakemake(work, "results/table2.csv", *resources)
        rerun_requests = sum(server.counts.values()) - sum(before.values())
        print(f"rerun (explanations deleted: every explain and simulate job again): requests {rerun_requests} "
              f"(goal 0), wall {rerun_wall:.0f} s")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
