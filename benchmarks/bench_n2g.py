"""N2G cost per neuron on the embedded SmolLM2-135M, and its ratio to the forward passes it needs.

For each of a few neurons: fit on the neuron's train records (augmentation on and off), predict and score
its valid records; every forward pass N2G makes is recorded (token ids, stop layer) and then replayed bare
(same batches, no hook, same ``stop_at_layer``) right after, so contention from other processes hits both
alike. Prints seconds per neuron, the bare forward seconds, their ratio, the N2G / token-lookup / 5-gram
scores (pooled Pearson as the simulator is scored, and firing P/R/F1 at 0.5), and the text description.

Records: ``results/smollm2-135m/debian-english/records/random.parquet`` (train and valid records with
``token_ids``) when present; otherwise records are built here from Python's own docs (64-token excerpts,
top-10 per neuron interleaved train/valid, like the pipeline's split).

    python benchmarks/bench_n2g.py [--records PATH] [--neurons 3] [--threads 2] [--augmentation both|model|off]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from autointerp.common.records import ActivationRecord, NeuronId
from autointerp.n2g import (N2GConfig, NeuronProbe, NGramLookup, TokenLookup, evaluate_predictions, fit_and_evaluate,
                            record_token_ids)
from autointerp.extract.records import TokenDecoder, load_records
from autointerp.extract.subject_models import load_prepared_model, prepare_model

RECORDS = "results/smollm2-135m/debian-english/records/random.parquet"


class RecordingProbe(NeuronProbe):
    """A probe that keeps every batch it ran, for the bare replay."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[tuple[np.ndarray, bool]] = []

    def activations(self, ids):
        self.batches.append((np.asarray(ids, dtype=np.int64).copy(), False))
        return super().activations(ids)

    def logits(self, ids):
        self.batches.append((np.asarray(ids, dtype=np.int64).copy(), True))
        return super().logits(ids)


def bare_seconds(probe: RecordingProbe) -> float:
    bridge, stop = probe.model.bridge, probe._stop()
    started = time.perf_counter()
    with torch.inference_mode():
        for ids, logits in probe.batches:
            for s in range(0, len(ids), probe.max_batch_rows):
                batch = torch.as_tensor(ids[s:s + probe.max_batch_rows])
                if logits:
                    bridge(batch, return_type="logits", attention_mask=torch.ones_like(batch))
                else:
                    bridge.run_with_hooks(batch, fwd_hooks=[], return_type=None, stop_at_layer=stop,
                                          attention_mask=torch.ones_like(batch))
    return time.perf_counter() - started


def docs_records(model, neurons: list[NeuronId], n_excerpts: int = 96):
    """Records built from Python's docs when the pipeline's records file is absent."""
    from autointerp.extract.corpus import build_corpus

    spec = {"source": "python_docs", "excerpt_tokens": 64, "n_excerpts": n_excerpts, "seed": 0}
    ids = np.array(build_corpus(spec, model.tokenizer).column("token_ids").to_pylist(), dtype=np.int64)
    decode = TokenDecoder(model.tokenizer)
    entries, token_ids = {}, {i: list(map(int, x)) for i, x in enumerate(ids)}
    for nid in neurons:
        acts = NeuronProbe(model, nid.layer, nid.neuron).activations(ids)
        order = np.argsort(-acts.max(axis=1), kind="stable")
        rec = lambda i: ActivationRecord(decode(ids[i]), [float(v) for v in acts[i]], excerpt_id=int(i))  # noqa: E731
        rest = order[10:]
        rnd = np.random.default_rng(0).choice(rest, size=5, replace=False)
        entries[nid] = {"train": [rec(i) for i in order[0:10:2]],
                        "valid": [rec(i) for i in order[1:10:2]] + [rec(i) for i in rnd],
                        "max_activation": float(acts.max()), "valid_sources": ["top"] * 5 + ["random"] * 5}
    return entries, token_ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", default=RECORDS)
    ap.add_argument("--model-dir", default="data/models/smollm2-135m")
    ap.add_argument("--neurons", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--augmentation", default="both", choices=["both", "model", "off"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    if not (model_dir / "model_info.json").exists():
        prepare_model("embedded:smollm2-135m-instruct", model_dir)
    model = load_prepared_model(model_dir)
    if Path(args.records).exists():
        entries, token_ids = load_records(args.records), record_token_ids(args.records)
        source = args.records
    else:
        entries, token_ids = docs_records(model, [NeuronId(1, 352), NeuronId(8, 143), NeuronId(15, 511)])
        source = "python_docs (built here)"
    neurons = sorted(entries)[: args.neurons]
    modes = ["model", "off"] if args.augmentation == "both" else [args.augmentation]
    print(f"records: {source}; neurons {[str(n) for n in neurons]}; {args.threads} threads")
    warm = NeuronProbe(model, 0, 0)  # warm-up of both paths (hooked partial pass, full logits pass)
    warm.activations(np.zeros((4, 8), dtype=np.int64))
    warm.logits(np.zeros((1, 8), dtype=np.int64))
    totals = {m: [0.0, 0.0] for m in modes}
    for nid in neurons:
        entry = entries[nid]
        for mode in modes:
            probe = RecordingProbe(model, nid.layer, nid.neuron)
            started = time.perf_counter()
            n2g, scores = fit_and_evaluate(probe, entry, token_ids, config=N2GConfig(augmentation=mode))
            total = time.perf_counter() - started
            bare = bare_seconds(probe)
            totals[mode][0] += total
            totals[mode][1] += bare
            st = n2g.stats
            print(f"\n{nid} augmentation={mode}: {total:.2f} s (forward passes inside: {probe.log.seconds:.2f} s; "
                  f"bare replay {bare:.2f} s; ratio {total / bare:.2f}); {probe.log.n_passes} passes, "
                  f"{probe.log.n_tokens} tokens; pivots {st['n_pivots']}, pruned lengths {st['prune_lengths']}, "
                  f"variants {st['n_variants']}, lines {st['n_lines']}, trie nodes {n2g.trie.n_nodes()}, "
                  f"stored-vs-recomputed max |diff| {st['stored_max_abs_diff']:.2g}")
            rows = {"N2G": scores}
            if mode == modes[0]:
                a_max = float(entry["max_activation"])
                for name, base in (("token lookup", TokenLookup.fit(entry["train"], a_max)),
                                   ("5-gram", NGramLookup.fit(entry["train"], a_max, n=5))):
                    rows[name] = evaluate_predictions(base.predict_records(entry["valid"]), entry["valid"], a_max,
                                                      entry.get("valid_sources"))
            for name, s in rows.items():
                print(f"  {name:>12}: score {s['score']:.3f} top {s['score_top']:.3f} random {s['score_random']:.3f}"
                      f" | firing P {s['firing_precision']:.2f} R {s['firing_recall']:.2f} F1 {s['firing_f1']:.2f}"
                      f" ({s['firing_n_true_firing']} firing tokens)")
            print(f"  description: {n2g.describe(max_groups=5)}")
    print()
    for mode, (total, bare) in totals.items():
        print(f"augmentation={mode}: {total / len(neurons):.2f} s per neuron, bare forward {bare / len(neurons):.2f} s "
              f"per neuron, ratio {total / bare:.2f}")


if __name__ == "__main__":
    main()
