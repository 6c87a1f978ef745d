"""A deterministic OpenAI-compatible test server on 127.0.0.1 (stdlib only), with fault injection.

Use as a context manager (`with LoopbackServer(latency=0.1) as srv: srv.base_url`) or via the `loopback` fixture.
Speed notes (measured): TCP_NODELAY plus one write per response avoid ~44 ms Nagle/delayed-ACK stalls, and a
large listen backlog keeps bursts of new connections from being refused.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FAULT_KINDS = ("429", "500", "400", "timeout", "malformed", "echo_key")
_TOKEN_RE = re.compile(r"\s*\S+|\s+")  # whitespace-ish tokens; leading space belongs to the token, as in GPT BPE


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _h(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()


def _fake_logprob(*parts: Any) -> float:
    return -round(int.from_bytes(_h(*parts)[:4], "big") / 2**32 * 8, 4)


def _top(token: str, n: int, *ctx: Any) -> list[tuple[str, float]]:
    """n alternatives including `token` itself, with deterministic descending logprobs."""
    alts = [token] + [f" alt{j}" for j in range(n - 1)]
    lps = sorted((_fake_logprob(token, j, *ctx) for j in range(n)), reverse=True)
    return list(zip(alts, lps))[:n]


def unit_vector(text: str, dim: int) -> list[float]:
    raw = b"".join(_h(text, i) for i in range(dim // 8 + 1))
    v = [(b - 127.5) / 127.5 for b in raw[:dim]]
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text if it did not parse
    t: float = field(default_factory=time.monotonic)


class LoopbackServer:
    def __init__(self, *, latency: float = 0.0, embedding_dim: int = 16,
                 script: Callable[[str, dict], Any] | None = None, models: list[str] | None = None,
                 echo_key: int | None = None, models_status: int | None = None,
                 usage_encoding: str | None = None):
        self.latency = latency
        # Count usage as a real server does, with a tiktoken encoding (prompt: the chat messages with OpenAI's
        # 3-per-message + 3 overhead, or the completion prompt / embedding inputs; completion: the reply text),
        # instead of the loopback's whitespace tokens: what the cost estimate is compared against.
        self.usage_encoding = usage_encoding
        self.embedding_dim = embedding_dim
        self.script = script  # (path, body) -> dict | (status, dict) | None (None: default reply)
        # GET /v1/models: None answers 404 (a server that does not list its models: the loopback serves any model
        # name, and the client's endpoint check then accepts whatever model a test configures); a list is served
        # as an OpenAI model list of those ids.
        self.models = models
        # When set, GET /v1/models answers this status instead (200: a JSON body that is not a model list).
        self.models_status = models_status
        # A misbehaving server for secret-handling tests: every /v1 route (GET /v1/models included) answers this
        # status (e.g. 401 or 500) with a JSON error whose message quotes the request's Authorization header.
        self.echo_key = echo_key
        self.gets: collections.Counter[str] = collections.Counter()  # GET requests by path (not in `counts`)
        self.faults: collections.deque[dict[str, Any]] = collections.deque()
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- control

    def add_faults(self, kind: str, n: int = 1, **opts: Any) -> None:
        """Queue n faults served to the next requests, in order. Options: retry_after (s, header `retry-after`),
        retry_after_ms (header `retry-after-ms`), sleep (s, for 'timeout': how long to stall), status (for
        'echo_key': the error status, default 401, whose message quotes the request's Authorization header).
        Faults are served to POST requests only (GET /v1/models, the client's endpoint check, takes none)."""
        assert kind in FAULT_KINDS, kind
        with self._lock:
            self.faults.extend({"kind": kind, **opts} for _ in range(n))

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.counts.clear()
            self.requests.clear()
            self.gets.clear()
            self.max_in_flight = 0

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(self.counts.values()) if path is None else self.counts[path]

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LoopbackServer":
        owner = self

        class Handler(_Handler):
            server_owner = owner

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024
            allow_reuse_address = True

        self._stop.clear()
        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers stalled in latency/timeout waits
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- replies

    def _reply(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.script is not None:
            out = self.script(path, body)
            if out is not None:
                return out if isinstance(out, tuple) else (200, out)
        if path == "/v1/chat/completions":
            return 200, self._chat(body)
        if path == "/v1/completions":
            return 200, self._completion(body)
        if path == "/v1/embeddings":
            return 200, self._embeddings(body)
        return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        msgs = body.get("messages", [])
        key = {k: body.get(k) for k in ("model", "messages", "temperature", "top_p", "max_tokens", "seed")}
        last = str(msgs[-1].get("content", "")) if msgs else ""
        text = f"reply {_h(key).hex()[:8]} to: {last[:60]}"
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
        if body.get("logprobs"):
            n = int(body.get("top_logprobs") or 0)
            content = []
            for i, t in enumerate(tokenize(text)):
                top = _top(t, max(n, 1), i, key)  # the sampled token's logprob equals its top-list entry
                content.append({"token": t, "logprob": top[0][1], "bytes": list(t.encode()),
                                "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(a.encode())}
                                                 for a, lp in top[:n]]})
            choice["logprobs"] = {"content": content}
        prompt_tokens = sum(len(tokenize(str(m.get("content", "")))) for m in msgs)
        return {"id": "chatcmpl-loopback", "object": "chat.completion", "created": 0, "model": body.get("model"),
                "choices": [choice], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokenize(text)),
                                               "total_tokens": prompt_tokens + len(tokenize(text))}}

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt", "")
        prompt = prompt if isinstance(prompt, str) else "".join(map(str, prompt))
        n = int(body.get("logprobs") or 0)
        gen = "" if int(body.get("max_tokens", 16) or 0) == 0 else " generated"
        text = (prompt if body.get("echo") else "") + gen
        toks = tokenize(text)
        offsets, pos = [], 0
        for t in toks:
            offsets.append(pos)
            pos += len(t)
        tops = [None if i == 0 else _top(t, max(n, 1), i, prompt) for i, t in enumerate(toks)]
        lp = {"tokens": toks, "text_offset": offsets,
              # The first position has nothing to condition on: None, as OpenAI returns it.
              "token_logprobs": [None if top is None else top[0][1] for top in tops],
              "top_logprobs": [None if top is None else dict(top[:n]) for top in tops]}
        return {"id": "cmpl-loopback", "object": "text_completion", "created": 0, "model": body.get("model"),
                "choices": [{"index": 0, "text": text, "logprobs": lp if n else None, "finish_reason": "length"}],
                "usage": {"prompt_tokens": len(tokenize(prompt)), "completion_tokens": len(tokenize(gen)),
                          "total_tokens": len(toks)}}

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        data = []
        for i, text in enumerate(inputs):
            v = unit_vector(str(text), self.embedding_dim)
            emb: Any = v
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        n = sum(len(tokenize(str(t))) for t in inputs)
        return {"object": "list", "model": body.get("model"), "data": data,
                "usage": {"prompt_tokens": n, "total_tokens": n}}


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses connections
    server_owner: LoopbackServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        try:  # one write per response
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        except OSError:  # the client gave up (timeout, or killed): nothing to do
            self.close_connection = True

    def _echo_key(self, status: int) -> None:
        """An error that quotes the request's Authorization header verbatim (as some proxies do)."""
        auth = self.headers.get("Authorization", "")
        self._send(status, json.dumps({"error": {"message": f"invalid credentials: got Authorization: {auth}",
                                                 "type": "loopback_echo_key", "header": auth}}).encode())

    def do_GET(self) -> None:
        srv = self.server_owner
        path = self.path.split("?")[0]
        if path != "/loopback/stats":
            with srv._lock:
                srv.gets[path] += 1
        if path == "/loopback/stats":  # for a server running in another process
            with srv._lock:
                stats = {"counts": dict(srv.counts), "max_in_flight": srv.max_in_flight, "gets": dict(srv.gets)}
            self._send(200, json.dumps(stats).encode())
        elif srv.echo_key is not None:
            self._echo_key(srv.echo_key)
        elif path.rstrip("/") == "/v1/models" and srv.models_status is not None:
            status = srv.models_status
            self._send(status, json.dumps({"status": "ok"} if status == 200 else
                                          {"error": {"message": f"models: HTTP {status}"}}).encode())
        elif path.rstrip("/") == "/v1/models" and srv.models is not None:
            self._send(200, json.dumps({"object": "list",
                                        "data": [{"id": m, "object": "model", "owned_by": "loopback"}
                                                 for m in srv.models]}).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        srv = self.server_owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with srv._lock:
            srv.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            srv.counts[self.path] += 1
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            fault = srv.faults.popleft() if srv.faults else None
        try:
            self._respond(srv, body, fault)
        finally:
            with srv._lock:
                srv.in_flight -= 1

    def _respond(self, srv: LoopbackServer, body: Any, fault: dict[str, Any] | None) -> None:
        kind = fault["kind"] if fault else None
        if srv.echo_key is not None or kind == "echo_key":
            self._echo_key(int(fault.get("status", 401)) if kind == "echo_key" else srv.echo_key)
            return
        if kind == "timeout":
            srv._stop.wait(fault.get("sleep", 5.0))  # stall past the client's timeout
            self._send(500, b'{"error": {"message": "too late"}}')
            return
        if kind in ("429", "500", "400"):
            headers = {}
            if "retry_after" in fault:
                headers["retry-after"] = str(fault["retry_after"])
            if "retry_after_ms" in fault:
                headers["retry-after-ms"] = str(fault["retry_after_ms"])
            msg = {"429": "rate limited", "500": "server exploded", "400": "bad request: invalid parameter"}[kind]
            self._send(int(kind), json.dumps({"error": {"message": msg, "type": "loopback_fault"}}).encode(), headers)
            return
        if srv.latency:
            srv._stop.wait(srv.latency)
        if kind == "malformed":
            self._send(200, b'{"id": "x", "choices": [{"message": ')
            return
        if not isinstance(body, dict):
            self._send(400, b'{"error": {"message": "body is not JSON"}}')
            return
        status, reply = srv._reply(self.path.split("?")[0], body)
        if status == 200 and srv.usage_encoding:
            reply["usage"] = _tiktoken_usage(srv.usage_encoding, self.path.split("?")[0], body, reply)
        self._send(status, json.dumps(reply).encode())


def _tiktoken_usage(encoding: str, path: str, body: dict, reply: dict) -> dict:
    from autointerp.prompts.tokens import count_chat_tokens, count_text_tokens

    if path == "/v1/chat/completions":
        prompt = count_chat_tokens(body.get("messages") or [], encoding)
        completion = count_text_tokens(reply["choices"][0]["message"].get("content") or "", encoding,
                                       allow_special=False)
    elif path == "/v1/completions":
        prompt, completion = count_text_tokens(str(body.get("prompt", "")), encoding), 0
    else:
        inputs = body.get("input", [])
        prompt = sum(count_text_tokens(t, encoding, allow_special=False)
                     for t in ([inputs] if isinstance(inputs, str) else inputs))
        completion = 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


if __name__ == "__main__":
    # Standalone: `python tests/loopback_server.py --latency 0.1` prints the port, serves until stdin closes.
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--embedding-dim", type=int, default=16)
    ap.add_argument("--models", nargs="*", default=None, help="ids GET /v1/models lists (default: 404)")
    ap.add_argument("--echo-key", type=int, default=None, metavar="STATUS",
                    help="answer every /v1 route with STATUS and an error quoting the Authorization header")
    a = ap.parse_args()
    with LoopbackServer(latency=a.latency, embedding_dim=a.embedding_dim, models=a.models,
                        echo_key=a.echo_key) as server:
        print(server.port, flush=True)
        sys.stdin.read()
