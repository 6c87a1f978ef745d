"""The embedded local LLM engine: SmolLM2-135M-Instruct (or any causal LM folder) via plain transformers, in-process,
with an OpenAI-compatible loopback server for the explain (chat) and simulate (echo logprobs) steps.

    from autointerp.engine import LocalEngine, serve
    engine = LocalEngine("/path/to/hf_folder", threads=1)
    with serve(engine) as base_url:          # http://127.0.0.1:PORT/v1
        ...                                  # AsyncOpenAI(base_url=base_url, api_key="local")

or as a separate process: ``python -m autointerp.engine --model-dir DIR --port 0 --ready-file PATH``.
"""

from autointerp.engine.engine import EngineError, GeneratedToken, Generation, LocalEngine, PromptLogprobs
from autointerp.engine.server import serve

__all__ = ["EngineError", "GeneratedToken", "Generation", "LocalEngine", "PromptLogprobs", "serve"]
