"""OpenAI request bodies -> ``LocalEngine`` calls -> OpenAI response bodies (the HTTP layer is ``server.py``).

``POST /v1/chat/completions`` and ``POST /v1/completions`` (legacy; ``echo=True, max_tokens=0, logprobs=N`` gives
prompt-token logprobs). Any model name is accepted (and logged): the engine serves one model. ``seed`` goes to
the engine as is (same seed, same sample; see ``generation.py``). Unsupported parameters that would change the
answer (``n>1``, ``stream=True``, penalties, ``logit_bias``, tools, ``best_of>1``, ``suffix``) get a 400 JSON error
rather than being silently ignored.

Non-standard request field (legacy completions only): ``"merge_digit_numbers": true|false`` turns the engine's
number-aware mode on or off for the echoed prompt's ``top_logprobs`` (merged "10" / complete-"1" entries for
digit-splitting tokenizers; see ``logprobs.py``). Absent, the engine's ``number_aware_logprobs`` decides, so a
server whose engine was built with ``number_aware_logprobs=True`` (CLI ``--number-aware-logprobs``) gives it to
the unmodified OpenAI client; with the openai package, send the field as ``extra_body={"merge_digit_numbers": ...}``.
Tokens generated after the prompt (``max_tokens > 0``) are not merged.

Second non-standard field: ``"echo_positions_near": "\t"`` (or null for every position) limits the echoed
``top_logprobs``/``token_logprobs`` to the tokens that follow that text, or begin with it and go on; the others are
null (tokens and offsets stay complete). Absent, the engine's ``echo_positions_near`` decides.

``cancelled`` (from the server: has the client gone?) is handed to every engine call; see ``RequestCancelled``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from autointerp.engine.engine import LocalEngine

log = logging.getLogger("autointerp.engine.api")


class RequestError(Exception):
    """A request body the API layer refuses (the server answers ``status``, 400 by default)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def _reject_unsupported(body: dict[str, Any], *, chat: bool) -> None:
    n = body.get("n", 1)
    if n not in (None, 1):
        raise RequestError("n > 1 is not supported by the local engine; send n separate requests", "n")
    if body.get("stream"):
        raise RequestError("stream=true is not supported by the local engine", "stream")
    for name in ("presence_penalty", "frequency_penalty"):
        v = body.get(name)
        if v not in (None, 0, 0.0):
            raise RequestError(f"{name} is not supported by the local engine (only 0)", name)
    if body.get("logit_bias"):
        raise RequestError("logit_bias is not supported by the local engine", "logit_bias")
    if chat:
        for name in ("tools", "functions", "tool_choice", "function_call"):
            if body.get(name):
                raise RequestError(f"{name} is not supported by the local engine", name)
        rf = body.get("response_format")
        if rf not in (None, {"type": "text"}):
            raise RequestError("response_format other than text is not supported by the local engine",
                               "response_format")
    else:
        if body.get("best_of") not in (None, 1):
            raise RequestError("best_of > 1 is not supported by the local engine", "best_of")
        if body.get("suffix"):
            raise RequestError("suffix is not supported by the local engine", "suffix")


def _max_tokens(body: dict[str, Any], default: int | None) -> int | None:
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestError("max_tokens must be a non-negative integer", "max_tokens")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be a boolean", name)
    return value


def _model_name(engine: LocalEngine, body: dict[str, Any], seen: set[str]) -> str:
    name = body.get("model")
    if name is None:
        name = engine.model_name
    if not isinstance(name, str):
        raise RequestError("model must be a string", "model")
    if name not in seen:
        seen.add(name)
        log.info("requests name model %r; served by the local engine (%s)", name, engine.model_name)
    else:
        log.debug("request for model %r", name)
    return name


def chat_completion(engine: LocalEngine, body: dict[str, Any], seen: set[str] | None = None,
                    cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    _reject_unsupported(body, chat=True)
    model = _model_name(engine, body, seen if seen is not None else set())
    if "messages" not in body:
        raise RequestError("messages is required", "messages")
    logprobs = body.get("logprobs") or False
    if not isinstance(logprobs, bool):
        raise RequestError("logprobs must be a boolean for chat completions", "logprobs")
    top = body.get("top_logprobs")
    if top is not None and not logprobs:
        raise RequestError("top_logprobs requires logprobs=true", "top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
        raise RequestError("top_logprobs must be an integer between 0 and 20", "top_logprobs")
    result = engine.chat(
        body["messages"],
        temperature=body.get("temperature", 1.0),
        top_p=body.get("top_p", 1.0),
        max_tokens=_max_tokens(body, None),
        seed=body.get("seed"),
        logprobs=logprobs,
        top_logprobs=top or 0,
        stop=body.get("stop"),
        ignore_eos=_flag(body, "ignore_eos"),
        cancelled=cancelled,
    )
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "local-engine",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.text, "refusal": None},
            "logprobs": result.logprobs,
            "finish_reason": result.finish_reason,
        }],
        "usage": result.usage,
    }


def completion(engine: LocalEngine, body: dict[str, Any], seen: set[str] | None = None,
               cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    _reject_unsupported(body, chat=False)
    model = _model_name(engine, body, seen if seen is not None else set())
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string (or a list holding one string)", "prompt")
    echo = body.get("echo") or False
    if not isinstance(echo, bool):
        raise RequestError("echo must be a boolean", "echo")
    n_top = body.get("logprobs")
    if n_top is not None and (isinstance(n_top, bool) or not isinstance(n_top, int) or not 0 <= n_top <= 100):
        raise RequestError("logprobs must be an integer between 0 and 100 for completions", "logprobs")
    merge = body.get("merge_digit_numbers")
    if merge is not None and not isinstance(merge, bool):
        raise RequestError("merge_digit_numbers must be a boolean", "merge_digit_numbers")
    near = body.get("echo_positions_near", engine.echo_positions_near)
    if near is not None and not isinstance(near, str):
        raise RequestError("echo_positions_near must be a string or null", "echo_positions_near")
    max_tokens = _max_tokens(body, 16)
    text, lp = "", None
    prompt_tokens, completion_tokens, finish = 0, 0, "length"
    if echo:
        text = prompt
        if n_top is not None:
            pl = engine.prompt_logprobs(prompt, top_logprobs=n_top, merge_digit_numbers=merge, positions_near=near,
                                        cancelled=cancelled)
            lp = pl.legacy()
            prompt_tokens = len(pl.tokens)
        else:
            prompt_tokens = len(engine.tokenize(prompt))
    if max_tokens != 0 or not echo:
        gen = engine.complete(
            prompt,
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            max_tokens=max_tokens,
            seed=body.get("seed"),
            logprobs=n_top is not None,
            top_logprobs=n_top or 0,
            stop=body.get("stop"),
            ignore_eos=_flag(body, "ignore_eos"),
            cancelled=cancelled,
        )
        base = len(text)
        text += gen.text
        prompt_tokens, completion_tokens, finish = gen.prompt_tokens, gen.completion_tokens, gen.finish_reason
        if n_top is not None:
            gen_lp = {
                "tokens": [g.token for g in gen.generated or []],
                "token_logprobs": [g.logprob for g in gen.generated or []],
                "top_logprobs": [engine.top_dict([t[0] for t in g.top], [t[3] for t in g.top])
                                 for g in gen.generated or []],
                "text_offset": [base + o for o in gen.text_offset or []],
            }
            if lp is None:
                lp = gen_lp
            else:
                for key in lp:
                    lp[key] = lp[key] + gen_lp[key]
    return {
        "id": "cmpl-" + uuid.uuid4().hex,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "local-engine",
        "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
