"""An OpenAI-compatible HTTP front for a ``LocalEngine`` (standard library only).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``, plus ``GET /health``; what
the POST bodies may hold and how they map onto the engine is ``api.py``. Errors are OpenAI-shaped JSON: 400 for a
bad request (``RequestError``, ``EngineError``), 404 for an unknown route, 500 for an engine failure.

Embeddings (addition): a server built with an embedder (``serve(engine, embedder=...)``, or embedder-only with
``serve_embedder(embedder)``) also answers ``POST /v1/embeddings`` in OpenAI's shape (``data[i].embedding``,
``usage.prompt_tokens``; ``encoding_format`` "float" or "base64"); see ``embedder.py``. Without one that route is a
404, as are the completion routes on an embedder-only server.

Loopback details that matter (measured, see research/offline_stack.md): TCP_NODELAY on every connection, each
response written with one ``write`` (otherwise Nagle + delayed ACK add ~40 ms per request), and a listen backlog
well above 5 so bursts of connections are queued, not refused. The engine serialises model work itself.

A client that goes away (timed out, killed) stops its request: the engine asks ``_ClientGone`` once it holds the
model lock and between decode steps, raises ``RequestCancelled``, and the server logs one line, writes nothing and
closes the connection, so a dead request neither finishes nor delays the ones queued behind it.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import json
import logging
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

from autointerp.engine.api import RequestError, chat_completion, completion
from autointerp.engine.engine import RequestCancelled
from autointerp.engine.validation import EngineError

if TYPE_CHECKING:
    from autointerp.engine.engine import LocalEngine
    from autointerp.engine.embedder import LocalEmbedder

log = logging.getLogger("autointerp.engine.server")

MAX_BODY_BYTES = 32 * 1024 * 1024

CLIENT_CHECK_INTERVAL_S = 0.05  # the engine asks per decode step; the socket is looked at this often at most

_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
                413: "Payload Too Large", 500: "Internal Server Error"}


def _error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _ClientGone:
    """``cancelled()`` for one request: has the peer closed (or reset) its connection?

    A closed peer makes the socket readable with ``recv(MSG_PEEK)`` returning b"". Peeking consumes nothing, so a
    pipelined next request stays in place (and reads as "still there"). Once gone, always gone. Called from the
    handler's own thread (the engine runs in it), so no locking."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._poll = select.poll() if hasattr(select, "poll") else None  # poll: no FD_SETSIZE limit
        if self._poll is not None:
            self._poll.register(sock, select.POLLIN | select.POLLPRI)
        self._next = 0.0  # the first call always looks (it follows the wait for the engine lock)
        self.gone = False

    def __call__(self) -> bool:
        if self.gone:
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + CLIENT_CHECK_INTERVAL_S
        self.gone = self._peer_closed()
        return self.gone

    def _peer_closed(self) -> bool:
        try:
            if self._poll is not None:
                ready = bool(self._poll.poll(0))
            else:
                ready = bool(select.select([self._sock], [], [], 0)[0])
            if not ready:
                return False
            return self._sock.recv(1, socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)) == b""
        except (BlockingIOError, InterruptedError):  # nothing to read after all
            return False
        except (OSError, ValueError):  # reset (ConnectionResetError) or already closed: the client is gone
            return True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: LocalEngine | None,
                 embedder: "LocalEmbedder | None" = None):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.engine = engine
        self.embedder = embedder  # answers POST /v1/embeddings when set
        self.models_seen: set[str] = set()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._open_lock:
            (self._open.add if add else self._open.discard)(sock)

    def close_open_connections(self) -> None:
        with self._open_lock:
            socks = list(self._open)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "autointerp-local-engine/1"
    timeout = 300  # idle keep-alive connections are dropped after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    # one write per response: status line, headers and body together
    def _send(self, status: int, payload: dict[str, Any], *, close: bool = False) -> None:
        try:
            body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except ValueError as exc:  # a non-finite float slipped through: a bug, but answer rather than hang
            status, body = 500, json.dumps(_error_body(f"unserialisable response: {exc}", kind="server_error")).encode()
        if close:
            self.close_connection = True
        head = (
            f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
            f"Server: {self.server_version}\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'close' if self.close_connection else 'keep-alive'}\r\n\r\n"
        ).encode("latin-1")
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True
            return
        self.log_request(status, len(body))

    def _error(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
               close: bool = False, kind: str = "invalid_request_error") -> None:
        self._send(status, _error_body(message, kind=kind, param=param, code=code), close=close)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0].rstrip("/")
        served = [m for m in (self.server.engine, self.server.embedder) if m is not None]
        cards = [{"id": m.model_name, "object": "model", "created": 0, "owned_by": "local"} for m in served]
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": cards})
        elif path.startswith("/v1/models/"):
            self._send(200, dict(cards[0], id=path[len("/v1/models/"):]))
        elif path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok", "model": served[0].model_name})
        else:
            self._error(404, f"no route GET {path}", code="not_found")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0].rstrip("/")
        routes = {"/v1/chat/completions": chat_completion, "/v1/completions": completion}
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._error(411, "Content-Length is required", close=True)
            return
        try:
            length = int(length_header)
        except ValueError:
            self._error(400, "bad Content-Length", close=True)
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self._error(413, f"request body over {MAX_BODY_BYTES} bytes", close=True)
            return
        raw = self.rfile.read(length)
        if self.server.engine is None:  # embedder-only server
            routes = {}
        if self.server.embedder is not None:  # addition: embeddings (see embedder.py)
            from autointerp.engine.embedder import embeddings_response

            routes["/v1/embeddings"] = lambda _engine, body, _seen, _cancelled: embeddings_response(
                self.server.embedder, body)
        if path not in routes:
            self._error(404, f"no route POST {path}", code="not_found")
            return
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._error(400, f"request body is not valid JSON: {exc}", code="invalid_json")
            return
        if not isinstance(body, dict):
            self._error(400, "request body must be a JSON object", code="invalid_json")
            return
        try:
            payload = routes[path](self.server.engine, body, self.server.models_seen, _ClientGone(self.connection))
        except RequestCancelled as exc:  # nobody to answer: drop the connection
            log.info("client disconnected: stopped %s after %d generated tokens", path, exc.generated_tokens)
            self.close_connection = True
        except RequestError as exc:
            self._error(exc.status, str(exc), param=exc.param, code=exc.code)
        except EngineError as exc:
            self._error(400, str(exc), param=exc.param)
        except Exception as exc:  # a bug or an engine failure: say so, keep serving
            log.exception("local engine failed on %s", path)
            self._error(500, f"local engine error: {type(exc).__name__}: {exc}", kind="server_error")
        else:
            self._send(200, payload)


@contextlib.contextmanager
def serve(engine: LocalEngine | None, host: str = "127.0.0.1", port: int = 0, *,
          embedder: "LocalEmbedder | None" = None) -> Iterator[str]:
    """Serve ``engine`` over HTTP in a background thread; yields the base URL (``http://HOST:PORT/v1``).
    With ``embedder``, also ``POST /v1/embeddings``; ``engine=None`` serves the embedder alone."""
    if engine is None and embedder is None:
        raise ValueError("serve needs an engine, an embedder, or both")
    server = _Server((host, port), engine, embedder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="local-engine-http", daemon=True)
    thread.start()
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/v1"
    names = " + ".join(m.model_name for m in (engine, embedder) if m is not None)
    log.info("local engine serving %s at %s", names, url)
    try:
        yield url
    finally:
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        thread.join(timeout=5)


def serve_embedder(embedder: "LocalEmbedder", host: str = "127.0.0.1", port: int = 0):
    """An embeddings-only server (``POST /v1/embeddings``, ``GET /v1/models``, ``/health``); a context manager
    yielding the base URL, as ``serve``."""
    return serve(None, host, port, embedder=embedder)
