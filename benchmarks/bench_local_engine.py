"""Throughput of the embedded local engine on the real SmolLM2-135M-Instruct, with and without prefix KV caching.

    python benchmarks/bench_local_engine.py [MODEL_DIR] [--threads N] [--rounds R]

MODEL_DIR defaults to $AUTOINTERP_SMOLLM2_DIR, else data/models/smollm2-135m/hf (made by
``autointerp.extract.subject_models.dequantise_embedded``).

(a) explain-like chat calls: ~1,500-token prompt sharing a ~1,300-token prefix, 60 new tokens, temperature 1;
(b) simulator-like echo calls: ~1,300-token prompt sharing a ~1,000-token prefix, top-15 logprobs at every position;
(c) the same echo calls with and without the number-aware mode (``merge_digit_numbers``: one extra batched forward
    for the positions whose top-15 holds "1"), uncached and with the shared prefix cached.

Cached and uncached calls are interleaved (uncached, cached, uncached, ...) so that load from other processes on
the machine hits both alike; the ratios printed come from one run. Each call has a different tail, as in the
workflow. Runtime is about 2-5 minutes on 2 cores (``--skip-chat/--skip-echo/--skip-number-aware``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

WORDS = (
    "the of and to in is was for that with as on by at from his her they this which be are an or had not but "
    "what all were when we there can more if no man out so said who up been one time she would about them into "
    "has over only new some could these two may first then do any like my now such our after most also made "
    "many before must through back years where much your way well down should because each just those people "
    "city river music colour red green blue cat dog horse run running walked neuron token activation cause "
    "energy water market paper court bank station school family garden winter light window letter voice"
).split()


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def _grow(engine, build, target_tokens: int) -> str:
    """Smallest text from build(k) (k = 1, 2, ...) reaching target_tokens tokens (coarse then fine search)."""
    k = 1
    while len(engine.tokenize(build(k))) < target_tokens:
        k *= 2
    lo, hi = k // 2, k
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        if len(engine.tokenize(build(mid))) < target_tokens:
            lo = mid
        else:
            hi = mid
    return build(hi)


def explain_messages(engine, rng_seed: int, prefix_tokens: int, tail_tokens: int, call: int):
    """System + few-shot (shared) and a final user message with new excerpts (per call)."""
    system = ("We're studying neurons in a neural network. Each neuron looks for some particular thing in a short "
              "document. Look at the parts of the document the neuron activates for and summarize in a single "
              "sentence what the neuron is looking for. Don't list examples of words.\n\nThe activation format is "
              "token<tab>activation. Activation values range from 0 to 10.")

    def fewshot(k: int) -> list[dict[str, str]]:
        rng = random.Random(rng_seed)
        msgs = [{"role": "system", "content": system}]
        for ex in range(k):
            lines = "\n".join(f"{w}\t{rng.choice([0, 0, 0, 0, 1, 3, 7, 10])}" for w in _words(rng, 24))
            msgs.append({"role": "user", "content": f"\n\nNeuron {ex + 1}\nActivations:\n<start>\n{lines}\n<end>\n\n"
                                                    f"Explanation of neuron {ex + 1} behavior: the main thing this "
                                                    "neuron does is find"})
            msgs.append({"role": "assistant", "content": " " + " ".join(_words(rng, 8)) + "."})
        return msgs

    k = 1
    while len(engine.tokenize(engine.render_chat(fewshot(k)))) < prefix_tokens:
        k += 1
    shared = fewshot(k)

    def final(j: int) -> list[dict[str, str]]:
        r = random.Random(1000 + call)
        lines = "\n".join(f"{w}\t{r.choice([0, 0, 0, 2, 5, 9])}" for w in _words(r, j))
        return shared + [{"role": "user", "content": f"\n\nNeuron {k + 1}\nActivations:\n<start>\n{lines}\n<end>\n\n"
                                                     f"Explanation of neuron {k + 1} behavior: the main thing this "
                                                     "neuron does is find"}]

    base = len(engine.tokenize(engine.render_chat(shared)))
    j = 1
    while len(engine.tokenize(engine.render_chat(final(j)))) < base + tail_tokens:
        j += 4
    return final(j)


def simulator_prompt(engine, prefix_tokens: int, tail_tokens: int, call: int) -> str:
    head = ("We're studying neurons in a neural network.\nEach neuron looks for some particular thing in a short "
            "document.\nLook at summary of what the neuron does, and try to predict how it will fire on each token."
            "\n\nThe activation format is token<tab>activation, activations go from 0 to 10, \"unknown\" indicates "
            "an unknown activation. Most activations will be 0.\n")

    def fewshot(n_words: int) -> str:
        rng = random.Random(7)
        body = "\n".join(f"{w}\t{rng.choice([0, 0, 0, 1, 4, 10])}" for w in _words(rng, n_words))
        return head + "\n\nNeuron 1\nExplanation of neuron 1 behavior: the main thing this neuron does is find " \
                      "colour words.\nActivations: \n<start>\n" + body + "\n<end>\n"

    prefix = _grow(engine, fewshot, prefix_tokens)

    def tail(n_words: int) -> str:
        rng = random.Random(5000 + call)
        body = "\n".join(f"{w}\tunknown" for w in _words(rng, n_words))
        return (prefix + "\n\nNeuron 2\nExplanation of neuron 2 behavior: the main thing this neuron does is find "
                + " ".join(_words(rng, 6)) + ".\nActivations: \n<start>\n" + body + "\n<end>\n")

    n_prefix = len(engine.tokenize(prefix))
    return _grow(engine, tail, n_prefix + tail_tokens)


def http_overhead(engine, prompts: list[str]) -> None:
    """The same (cached) echo call direct and through the loopback server + openai client: the HTTP/JSON cost."""
    import asyncio

    import openai

    from autointerp.engine import serve

    engine.cache_entries = 4

    async def call(client, prompt):
        t = time.perf_counter()
        r = await client.completions.create(model="smollm2-135m-instruct", prompt=prompt, echo=True, max_tokens=0,
                                            logprobs=15)
        assert r.choices[0].text == prompt
        return time.perf_counter() - t

    async def run_all(base_url):
        client = openai.AsyncOpenAI(base_url=base_url, api_key="local", max_retries=0)
        try:
            return [await call(client, p) for p in prompts]
        finally:
            await client.close()

    direct = []
    for p in prompts:
        t = time.perf_counter()
        engine.prompt_logprobs(p, 15)
        direct.append(time.perf_counter() - t)
    with serve(engine) as base_url:
        via_http = asyncio.run(run_all(base_url))
    d, h = statistics.median(direct), statistics.median(via_http)
    print(f"  repeated echo calls (prompt fully cached, ~no model time) direct {d:.2f} s vs through HTTP + openai "
          f"client {h:.2f} s: HTTP/JSON overhead {h - d:+.2f} s per call")


def number_aware_cost(engine, prompts: list[str], rounds: int) -> None:
    """(c): echo calls with merge_digit_numbers off/on, interleaved; uncached, then with the prefix cached."""
    print(f"\n(c) number-aware echo (top-15, merge_digit_numbers): prompts {len(engine.tokenize(prompts[1]))}+ tokens")
    for cached in (False, True):
        engine.cache_entries = 4 if cached else 0
        engine.clear_cache()
        if cached:  # stores the shared prefix, with its "1"-continuations
            engine.prompt_logprobs(prompts[0], 15, merge_digit_numbers=True)
        times: dict[bool, list[float]] = {False: [], True: []}
        for c in range(1, rounds + 1):
            for merge in (False, True):
                if cached:  # each call finds only the shared prefix, as in the workflow
                    engine.clear_cache()
                    engine.prompt_logprobs(prompts[0], 15, merge_digit_numbers=True)
                t = time.perf_counter()
                res = engine.prompt_logprobs(prompts[c], 15, merge_digit_numbers=merge)
                times[merge].append(time.perf_counter() - t)
                timing = engine.last_timing
                extra = (f"; {len(res.digit_merged)} positions merged, {timing['digit_queries']} extra queries in "
                         f"{timing['digit_s']:.2f}s") if merge else ""
                print(f"  {'cached' if cached else 'uncached':8s} call {c} merge={str(merge):5s}: "
                      f"{times[merge][-1]:6.2f} s (model ran {timing['prefill_tokens']} tokens{extra})")
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"  {'cached' if cached else 'uncached'} median s/call: off {off:.2f}, on {on:.2f} (x{on / off:.2f})")
    engine.cache_entries = 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?",
                    default=os.environ.get("AUTOINTERP_SMOLLM2_DIR", "data/models/smollm2-135m/hf"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved uncached/cached pairs per workload")
    ap.add_argument("--skip-chat", action="store_true")
    ap.add_argument("--skip-echo", action="store_true")
    ap.add_argument("--skip-number-aware", action="store_true")
    args = ap.parse_args()
    if not Path(args.model_dir, "config.json").is_file():
        print(f"no model folder at {args.model_dir}; make one with autointerp.extract.subject_models.dequantise_embedded",
              file=sys.stderr)
        return 2

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from autointerp.engine import LocalEngine

    t0 = time.perf_counter()
    engine = LocalEngine(args.model_dir, threads=args.threads, cache_entries=4)
    print(f"model {args.model_dir}: loaded in {time.perf_counter() - t0:.2f}s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}")
    t_start = time.perf_counter()

    outputs: dict[str, object] = {}

    def run(mode: str, fn):
        engine.cache_entries = 4 if mode == "cached" else 0
        t = time.perf_counter()
        outputs[mode] = fn()
        return time.perf_counter() - t, dict(engine.last_timing)

    def max_diff(a, b) -> float:
        """Largest |logprob difference| between two PromptLogprobs over tokens and shared top-15 entries."""
        worst = 0.0
        for x, y in zip(a.token_logprobs, b.token_logprobs):
            if x is not None and y is not None:
                worst = max(worst, abs(x - y))
        for da, db in zip(a.top_logprobs, b.top_logprobs):
            for tok in set(da or {}) & set(db or {}):
                worst = max(worst, abs(da[tok] - db[tok]))
        return worst

    results = {}
    if not args.skip_echo:
        prompts = [simulator_prompt(engine, 1000, 300, c) for c in range(args.rounds + 1)]
        n_tok = [len(engine.tokenize(p)) for p in prompts]
        n_shared = len(os.path.commonprefix([engine.tokenize(p) for p in prompts]))
        print(f"\n(b) simulator-like echo (top-15 at every position): prompts {min(n_tok)}-{max(n_tok)} tokens, "
              f"{n_shared} shared")
        run("cached", lambda: engine.prompt_logprobs(prompts[0], 15))  # warm: stores the shared prefix
        rows = {"uncached": [], "cached": []}
        diffs: list[float] = []
        for c in range(1, args.rounds + 1):
            for mode in ("uncached", "cached"):
                dt, timing = run(mode, lambda: engine.prompt_logprobs(prompts[c], 15))
                rows[mode].append((dt, timing))
                if mode == "cached":
                    diffs.append(max_diff(outputs["cached"], outputs["uncached"]))
                print(f"  {mode:8s} call {c}: {dt:6.2f} s  (model ran {timing['prefill_tokens']} tokens, "
                      f"reused {timing['reused_tokens']}; {n_tok[c] / dt:6.0f} prompt tok/s effective)")
        med = {m: statistics.median(d for d, _ in v) for m, v in rows.items()}
        fresh_rate = statistics.median(t["prefill_tokens"] / t["prefill_s"] for _, t in rows["uncached"])
        print(f"  median s/call: uncached {med['uncached']:.2f}, cached {med['cached']:.2f}; "
              f"speed-up x{med['uncached'] / med['cached']:.2f}")
        print(f"  prefill (incl. top-15 over the vocab at each position) uncached: {fresh_rate:.0f} tok/s; "
              f"effective with cache: {statistics.median(n_tok[1:]) / med['cached']:.0f} prompt tok/s")
        print(f"  cached vs uncached results: max |logprob difference| {max(diffs):.2e}")
        results["echo"] = med
        http_overhead(engine, prompts[1:])

    if not args.skip_number_aware:
        number_aware_cost(engine, [simulator_prompt(engine, 1000, 300, c) for c in range(args.rounds + 1)],
                          args.rounds)

    if not args.skip_chat:
        convs = [explain_messages(engine, 11, 1300, 200, c) for c in range(args.rounds + 1)]
        ids = [engine.tokenize(engine.render_chat(m)) for m in convs]
        n_shared = len(os.path.commonprefix(ids))
        print(f"\n(a) explain-like chat (60 new tokens, temperature 1): prompts {min(map(len, ids))}-"
              f"{max(map(len, ids))} tokens, {n_shared} shared")
        run("cached", lambda: engine.chat(convs[0], temperature=1.0, top_p=1.0, max_tokens=60, seed=0))
        rows = {"uncached": [], "cached": []}
        same = 0
        for c in range(1, args.rounds + 1):
            for mode in ("uncached", "cached"):
                # ignore_eos: every call makes exactly 60 tokens, so calls are comparable
                dt, timing = run(mode, lambda: engine.chat(convs[c], temperature=1.0, top_p=1.0, max_tokens=60,
                                                           seed=c, ignore_eos=True))
                rows[mode].append((dt, timing))
                if mode == "cached":
                    same += outputs["cached"].token_ids == outputs["uncached"].token_ids
                pre = timing["prefill_tokens"] / max(timing["prefill_s"], 1e-9)
                dec = timing["decode_tokens"] / max(timing["decode_s"], 1e-9)
                print(f"  {mode:8s} call {c}: {dt:6.2f} s  prefill {timing['prefill_tokens']:5d} tok "
                      f"(reused {timing['reused_tokens']}) in {timing['prefill_s']:.2f}s = {pre:4.0f} tok/s; "
                      f"{timing['decode_tokens']} new tokens in {timing['decode_s']:.2f}s = {dec:4.1f} tok/s")
        med = {m: statistics.median(d for d, _ in v) for m, v in rows.items()}
        dec_rate = statistics.median(t["decode_tokens"] / t["decode_s"] for v in rows.values() for _, t in v)
        print(f"  calls/minute: uncached {60 / med['uncached']:.1f}, cached {60 / med['cached']:.1f}; "
              f"speed-up x{med['uncached'] / med['cached']:.2f}; generation {dec_rate:.1f} tok/s (median)")
        print(f"  same seed, cached vs uncached: identical 60-token samples in {same}/{args.rounds} calls")
        results["chat"] = med

    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f}s; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
