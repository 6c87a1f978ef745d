"""``python -m autointerp.engine --model-dir DIR [--port 0] [--ready-file PATH]``: serve until SIGTERM/SIGINT.

Once listening, the base URL (``http://127.0.0.1:PORT/v1``) is printed and written to ``--ready-file`` atomically
(a temporary file in the same folder, then rename), so a waiting process never reads half a URL. On SIGTERM or
SIGINT the server stops, the ready file is removed (unless ``--keep-ready-file``) and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from autointerp.common.io import atomic_write_text

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autointerp.engine", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True, help="Hugging Face model folder (config, weights, tokenizer)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    p.add_argument("--ready-file", type=Path, help="write the base URL here once listening")
    p.add_argument("--keep-ready-file", action="store_true", help="leave the ready file in place on exit")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1: steadiest when other jobs share the cores; "
                   "with 2, also set OMP_WAIT_POLICY=PASSIVE in the environment)")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    p.add_argument("--cache-entries", type=int, default=4, help="prefix KV cache entries (0 disables)")
    p.add_argument("--number-aware-logprobs", action="store_true",
                   help="echo top_logprobs merge digit tokens into \"10\" and complete \"1\" by default (requests can "
                        "still send merge_digit_numbers=false); for the simulator's 0-10 scale with SmolLM2")
    p.add_argument("--model-name", default=None, help="the id /v1/models reports (any name is accepted)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("autointerp.engine").info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    import torch

    from autointerp.engine.engine import LocalEngine
    from autointerp.engine.server import serve

    engine = LocalEngine(args.model_dir, threads=args.threads, dtype=getattr(torch, _DTYPES[args.dtype]),
                         cache_entries=args.cache_entries, model_name=args.model_name,
                         number_aware_logprobs=args.number_aware_logprobs)
    if stop.is_set():
        return 0
    with serve(engine, host=args.host, port=args.port) as url:
        if args.ready_file is not None:
            atomic_write_text(args.ready_file, url + "\n")
        print(url, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            if args.ready_file is not None and not args.keep_ready_file:
                try:
                    if args.ready_file.read_text().strip() == url:
                        args.ready_file.unlink()
                except OSError:
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
