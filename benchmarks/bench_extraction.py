"""Extraction overhead: wall time of the streaming extraction pass / a bare forward pass over the same batches.

Default model (embedded SmolLM2-135M, all 30 layers, MLP post hook), excerpts of 64 tokens from Python's own
docs (no install needed). Runs bare, extract, bare, extract, ... and reports each ratio against the mean of
the bare passes on either side, then the median. Goal: <= 1.10.

    .venv/bin/python benchmarks/bench_extraction.py [--excerpts 256] [--repeats 2] [--model-dir data/models/X]
        [--device cuda]   # the GPU figure: --excerpts 20000 --batch-size 256 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autointerp.extract.corpus import build_corpus
from autointerp.extract.activations import ExtractionSettings, bare_forward_seconds, extract, write_layer_shards
from autointerp.extract.subject_models import load_prepared_model, prepare_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--excerpts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model-dir", default="data/models/smollm2-135m")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (the subject.device values)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    if not (model_dir / "model_info.json").exists():
        prepare_model("embedded:smollm2-135m-instruct", model_dir)
    model = load_prepared_model(model_dir, device=args.device)
    spec = {"source": "python_docs", "excerpt_tokens": 64, "n_excerpts": args.excerpts, "seed": 0}
    tokens = np.array(build_corpus(spec, model.tokenizer).column("token_ids").to_pylist(), dtype=np.int64)
    settings = ExtractionSettings(layers=list(range(model.n_layers)), batch_size=args.batch_size)
    print(f"{len(tokens)} excerpts x 64 tokens, {model.n_layers} layers x {model.d_mlp} neurons, "
          f"batch {args.batch_size}, {args.device}, {args.threads} threads")
    bare_forward_seconds(model, tokens[: args.batch_size], args.batch_size, args.device)  # warm-up
    bare = [bare_forward_seconds(model, tokens, args.batch_size, args.device)]
    ratios, extract_times, write_times = [], [], []
    for _ in range(args.repeats):
        run = extract(model, tokens, settings, device=args.device)
        extract_times.append(run.total_seconds)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            write_layer_shards(run, settings, {layer: Path(tmp) / f"{layer}.parquet" for layer in settings.layers}, {})
            write_times.append(time.perf_counter() - started)
        bare.append(bare_forward_seconds(model, tokens, args.batch_size, args.device))
        ratios.append(run.total_seconds / ((bare[-2] + bare[-1]) / 2))
    print("bare forward s:", [round(b, 2) for b in bare])
    print("extraction pass s:", [round(e, 2) for e in extract_times], " writing shards s:",
          [round(w, 2) for w in write_times])
    print(f"tokens/s (bare): {tokens.size / statistics.mean(bare):.0f}")
    print("ratios:", [round(r, 3) for r in ratios])
    print(f"RATIO extraction/bare forward (median): {statistics.median(ratios):.3f}   goal <= 1.10")
    with_write = statistics.median(
        (e + w) / ((bare[i] + bare[i + 1]) / 2) for i, (e, w) in enumerate(zip(extract_times, write_times)))
    print(f"ratio including writing the 30 shards: {with_write:.3f}")


if __name__ == "__main__":
    main()
