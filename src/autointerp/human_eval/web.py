"""The rating web app: a WSGI application (standard library only) served by ``waitress`` with timeouts and limits.

Routes: ``GET /`` (name form), ``POST /start``, ``GET /rate`` (the rater's current neuron), ``POST /rate``,
``POST /stop``, ``GET /style.css``. Nothing else is served: no static files, never the study database.

Blinding: pages are rendered from :func:`store.item_view`, which does not select the format labels. Explanations
are shown in the rater's stored order and named on the wire by an opaque per-rater id, HMAC-SHA256(rater key,
explanation id); database ids never leave the server (they follow the format order of the study file).
"""

from __future__ import annotations

import hmac
import html
import sqlite3
import sys
import threading
import time
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

from autointerp.common.shading import STRONG_LEVEL, shade_level, visible_token
from autointerp.human_eval import store
from autointerp.human_eval.store import SCORE_LABELS, ValidationError

COOKIE = "hev_session"
MAX_BODY = 64 * 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

STYLE = """
:root { color-scheme: light; --ink: #111; --muted: #444; --focus: #0b57d0; }
* { box-sizing: border-box; }
body { font: 17px/1.5 system-ui, sans-serif; color: var(--ink); background: #fff; margin: 0 auto;
       max-width: 62rem; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0; } h2 { font-size: 1.2rem; margin: 1.5rem 0 .5rem; }
a, button, input, label { font: inherit; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.progress { margin: 0 0 1rem; } progress { width: min(24rem, 100%); height: 1rem; }
.errors { border: 2px solid #000; padding: .5rem 1rem; background: #fff3f3; }
.errors::before { content: "Problem: "; font-weight: 700; }
.excerpts { padding-left: 1.5rem; }
.excerpts li { margin: .4rem 0; }
.excerpt { font-family: ui-monospace, monospace; font-size: .95rem; white-space: pre-wrap; line-height: 1.9;
           word-break: break-word; border: 1px solid #bbb; padding: .4rem .6rem; margin: 0; }
.t { border-radius: 2px; }
.a1 { background: #f1f6fd; } .a2 { background: #e3edfb; } .a3 { background: #d5e4f9; } .a4 { background: #c7dbf7; }
.a5 { background: #b9d2f5; } .a6 { background: #abc9f3; } .a7 { background: #9dc0f1; } .a8 { background: #8fb7ef; }
.a9 { background: #81aeed; } .a10 { background: #73a5eb; }
.hi { font-weight: 700; text-decoration: underline; text-decoration-thickness: 2px; text-underline-offset: 3px; }
.v { font-size: .7em; font-weight: 400; vertical-align: super; padding: 0 .15em; }
.v.lo { display: none; }
#allvalues:checked ~ .excerpts .v.lo { display: inline; }
.legend { color: var(--muted); font-size: .95rem; }
.toggle { display: inline-flex; gap: .4rem; align-items: center; margin: .25rem 0; }
fieldset { border: 1px solid #888; margin: 1rem 0; padding: .5rem 1rem 1rem; }
legend { padding: 0 .3rem; }
.statement q { font-weight: 700; }
.scale { display: grid; grid-template-columns: repeat(5, 1fr); gap: .4rem; }
@media (max-width: 40rem) { .scale { grid-template-columns: 1fr; } }
.scale label, .best label { display: flex; gap: .35rem; align-items: center; border: 1px solid #888;
                            border-radius: 4px; padding: .3rem .5rem; cursor: pointer; line-height: 1.25; }
.best label { margin: .35rem 0; }
.scale label:has(input:checked), .best label:has(input:checked) { border: 3px solid #000; font-weight: 700; }
input[type=radio], input[type=checkbox] { width: 1.1rem; height: 1.1rem; margin: 0; flex: none; }
button { padding: .5rem 1.2rem; border: 2px solid #000; border-radius: 4px; background: #f2f2f2; cursor: pointer; }
button.primary { background: #0b57d0; color: #fff; border-color: #0b57d0; }
.stop { margin-top: 2rem; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
                   white-space: nowrap; }
input[type=text] { padding: .4rem; border: 2px solid #555; border-radius: 4px; width: min(24rem, 100%); }
"""

SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def opaque_id(key: bytes, kind: str, value: int) -> str:
    """A per-rater name for a database id that carries no information about it."""
    return hmac.new(key, f"{kind}:{value}".encode(), "sha256").hexdigest()[:20]


def letter(index: int) -> str:
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


class Response:
    def __init__(self, status: int = 200, body: str | bytes = "", content_type: str = "text/html; charset=utf-8",
                 headers: list[tuple[str, str]] | None = None):
        self.status, self.content_type = status, content_type
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.headers = list(headers or [])


def redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(303, "", "text/plain; charset=utf-8", [("Location", location), *(headers or [])])


class HumanEvalApp:
    """WSGI application over one study database (a fresh SQLite connection per request)."""

    def __init__(self, db_path, *, secure_cookies: bool = False, allowed_hosts=None):
        self.db_path = db_path
        self.secure_cookies = secure_cookies
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        store.connect(db_path).close()  # fail now, not on the first request, if it is not a study

    # ------------------------------------------------------------------------------------------- plumbing
    def __call__(self, environ, start_response):
        try:
            response = self.handle(environ)
        except Exception as exc:  # noqa: BLE001 - a server error page, never a traceback to the client
            print(f"humaneval: error on {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}: {exc!r}",
                  file=sys.stderr)
            response = self.error_page(500, "Something went wrong on the server. Please reload the page.")
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                   *SECURITY_HEADERS, *response.headers]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else response.body]

    def handle(self, environ) -> Response:
        if self.allowed_hosts is not None:
            host = environ.get("HTTP_HOST", "")
            hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
            if hostname.lower() not in self.allowed_hosts:
                return self.error_page(400, "Unknown host name.")
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        routes = {"/": ("GET",), "/start": ("POST",), "/rate": ("GET", "POST"), "/stop": ("POST",),
                  "/style.css": ("GET",)}
        if path not in routes:
            return self.error_page(404, "There is no such page.")
        if method == "HEAD":
            method = "GET"
        if method not in routes[path]:
            response = self.error_page(405, "This address does not accept that request.")
            response.headers.append(("Allow", ", ".join(routes[path])))
            return response
        if path == "/style.css":
            return Response(200, STYLE, "text/css; charset=utf-8")
        form = None
        if method == "POST":
            form = self.read_form(environ)
            if isinstance(form, Response):
                return form
        conn = store.connect(self.db_path)
        try:
            token = self.cookie(environ)
            session = store.load_session(conn, token)
            if path == "/":
                return self.get_home(conn, token, session)
            if path == "/start":
                return self.post_start(conn, token, session, form)
            if path == "/stop":
                return self.post_stop(conn, token, session, form)
            if method == "GET":
                return self.get_rate(conn, session)
            return self.post_rate(conn, session, form)
        finally:
            conn.close()

    @staticmethod
    def cookie(environ) -> str | None:
        try:
            morsel = SimpleCookie(environ.get("HTTP_COOKIE", "")).get(COOKIE)
        except CookieError:
            return None
        return morsel.value if morsel else None

    def set_cookie(self, token: str, max_age: int) -> tuple[str, str]:
        value = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        return ("Set-Cookie", value + ("; Secure" if self.secure_cookies else ""))

    def read_form(self, environ) -> dict[str, list[str]] | Response:
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self.error_page(415, "Forms must be sent as application/x-www-form-urlencoded.")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self.error_page(400, "Bad request.")
        if length < 0 or length > MAX_BODY:
            return self.error_page(413, "The form is too large.")
        try:
            body = environ["wsgi.input"].read(length).decode("utf-8")
            return parse_qs(body, keep_blank_values=True, max_num_fields=500)
        except (UnicodeDecodeError, ValueError):
            return self.error_page(400, "Bad request.")

    @staticmethod
    def csrf_ok(session, form) -> bool:
        sent = form.get("csrf", [])
        return session is not None and len(sent) == 1 and hmac.compare_digest(sent[0].encode(),
                                                                              session["csrf"].encode())

    # ------------------------------------------------------------------------------------------- pages
    def page(self, title: str, body: str, status: int = 200, headers=None) -> Response:
        doc = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
               f"<title>{esc(title)}</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\n"
               f"<body><main>\n{body}\n</main></body></html>\n")
        return Response(status, doc, headers=headers)

    def error_page(self, status: int, message: str) -> Response:
        return self.page(f"Error {status}", f"<h1>{esc(HTTPStatus(status).phrase)}</h1>\n<p>{esc(message)}</p>\n"
                                            "<p><a href=\"/\">Back to the start</a></p>", status)

    def get_home(self, conn, token, session, *, error: str = "", name: str = "", status: int = 200,
                 message: str = "") -> Response:
        if session is not None and session["rater_id"] is not None and not error:
            return redirect("/rate")
        headers = []
        if session is None:
            token, csrf = store.new_session(conn, replace=token)
            headers.append(self.set_cookie(token, store.ANONYMOUS_MAX_AGE_S))
        else:
            csrf = session["csrf"]
        n_items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        err = f'<p class="errors" role="alert" id="name-error">{esc(error)}</p>\n' if error else ""
        note = f'<p role="status">{esc(message)}</p>\n' if message else ""
        described = ' aria-describedby="name-error" aria-invalid="true"' if error else ""
        body = (
            f"<h1>Rate explanations of neurons</h1>\n{note}"
            f"<p>You will see {n_items} neuron{'s' if n_items != 1 else ''} of a language model, one per page: "
            "text excerpts on which the neuron activates most strongly, then several candidate explanations of "
            "what the neuron does. Rate how well each explanation describes the neuron, and choose the best one.</p>"
            "<p>Your answers are saved on every page. You can stop at any time and continue later by entering "
            "the same name.</p>\n"
            f"{err}<form method=\"post\" action=\"/start\">\n"
            f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(csrf)}\">\n"
            "<p><label for=\"name\">Your name (1–64 characters)</label><br>"
            f"<input type=\"text\" id=\"name\" name=\"name\" maxlength=\"{store.MAX_NAME_LENGTH}\" required "
            f"autocomplete=\"name\" value=\"{esc(name)}\"{described}></p>\n"
            "<p><button type=\"submit\" class=\"primary\">Start or continue</button></p>\n</form>")
        return self.page("Rate explanations of neurons", body, status, headers)

    def post_start(self, conn, token, session, form) -> Response:
        if not self.csrf_ok(session, form):
            return self.error_page(403, "Your session expired or the form is stale (this site needs cookies). "
                                        "Please start again.")
        names = form.get("name", [])
        try:
            if len(names) != 1:
                raise ValidationError("Please enter your name.")
            rater = store.get_or_create_rater(conn, names[0])
        except ValidationError as exc:
            return self.get_home(conn, token, session, error=str(exc), name=(names or [""])[0][:200], status=400)
        new_token, _ = store.new_session(conn, rater["id"], replace=token)  # a fresh token on login
        return redirect("/rate", [self.set_cookie(new_token, store.SESSION_MAX_AGE_S)])

    def post_stop(self, conn, token, session, form) -> Response:
        if not self.csrf_ok(session, form):
            return self.error_page(403, "Your session expired or the form is stale. Please start again.")
        store.end_session(conn, token)
        # the name form again, under a fresh anonymous session whose cookie replaces the ended one
        return self.get_home(conn, None, None, message="Your answers are saved. Enter the same name to continue "
                                                       "later.")

    def rater_of(self, conn, session):
        if session is None or session["rater_id"] is None:
            return None
        return store.rater_by_id(conn, session["rater_id"])

    def get_rate(self, conn, session) -> Response:
        rater = self.rater_of(conn, session)
        if rater is None:
            return redirect("/")
        pages = store.assignment(conn, rater["id"])
        current = next((p for p in pages if not p["done"]), None)
        if current is None:
            return self.done_page(rater, session, len(pages))
        return self.item_page(conn, rater, session, current, pages)

    def done_page(self, rater, session, total: int) -> Response:
        body = (f"<h1>Thank you, {esc(rater['name'])}!</h1>\n"
                f"<p role=\"status\">You have rated all {total} neuron{'s' if total != 1 else ''}. "
                "Your answers are saved; you can close this page.</p>\n" + self.stop_form(session, "Sign out"))
        return self.page("Thank you", body)

    @staticmethod
    def stop_form(session, label: str = "Stop for now") -> str:
        return ("<form method=\"post\" action=\"/stop\" class=\"stop\">"
                f"<input type=\"hidden\" name=\"csrf\" value=\"{esc(session['csrf'])}\">"
                f"<button type=\"submit\">{esc(label)}</button></form>")

    def item_page(self, conn, rater, session, page: dict, pages: list[dict], *, errors=(), chosen=None,
                  status: int = 200) -> Response:
        view = store.item_view(conn, page["item_id"], page["order"])
        key = rater["hmac_key"]
        total, done = len(pages), sum(p["done"] for p in pages)
        chosen = chosen or {}
        parts = [f"<h1>Neuron {page['position']} of {total}</h1>",
                 f"<p class=\"progress\"><label for=\"progress\">Rated so far: {done} of {total}</label><br>"
                 f"<progress id=\"progress\" max=\"{total}\" value=\"{done}\">{done} of {total}</progress></p>"]
        if errors:
            parts.append("<div class=\"errors\" role=\"alert\" id=\"form-errors\"><ul>"
                         + "".join(f"<li>{esc(e)}</li>" for e in errors) + "</ul></div>")
        parts.append(self.excerpts_html(view))
        parts.append(f"<form method=\"post\" action=\"/rate\">\n<input type=\"hidden\" name=\"csrf\" "
                     f"value=\"{esc(session['csrf'])}\">\n<input type=\"hidden\" name=\"item\" "
                     f"value=\"{page['position']}\">\n<h2>Explanations</h2>\n<p>For each explanation, how much do "
                     "you agree with the statement “[explanation] is a good explanation of the neuron's "
                     "behavior”?</p>")
        for i, (eid, text) in enumerate(view["explanations"]):
            oid, name = opaque_id(key, "explanation", eid), letter(i)
            radios = []
            for score, label in SCORE_LABELS.items():
                checked = " checked" if chosen.get(f"score-{oid}") == str(score) else ""
                radios.append(f"<label><input type=\"radio\" name=\"score-{oid}\" value=\"{score}\" required"
                              f"{checked}> {score} · {esc(label)}</label>")
            parts.append(f"<fieldset class=\"statement\"><legend>Explanation {name}: <q>{esc(text)}</q> is a good "
                         f"explanation of the neuron's behavior.</legend>\n<div class=\"scale\">"
                         + "\n".join(radios) + "</div></fieldset>")
        best = []
        for i, (eid, text) in enumerate(view["explanations"]):
            oid = opaque_id(key, "explanation", eid)
            checked = " checked" if chosen.get("best") == oid else ""
            best.append(f"<label><input type=\"radio\" name=\"best\" value=\"{oid}\" required{checked}> "
                        f"Explanation {letter(i)}: {esc(text)}</label>")
        parts.append("<fieldset class=\"best\"><legend>Which explanation is the best one?</legend>\n"
                     + "\n".join(best) + "</fieldset>")
        parts.append("<p><button type=\"submit\" class=\"primary\">Submit and continue</button></p>\n</form>")
        parts.append(self.stop_form(session))
        return self.page(f"Neuron {page['position']} of {total}", "\n".join(parts), status)

    @staticmethod
    def excerpts_html(view: dict) -> str:
        max_act = view["max_activation"]
        excerpts = []
        for excerpt in view["excerpts"]:
            spans = []
            for tok, act in zip(excerpt["tokens"], excerpt["activations"]):
                level = shade_level(act, max_act)
                shown = visible_token(tok)
                value = f"{act:.2f}"
                classes = "t" + (f" a{level}" if level else "") + (" hi" if level >= STRONG_LEVEL else "")
                vclass = "v" if level >= STRONG_LEVEL else "v lo"
                spans.append(f"<span class=\"{classes}\" title=\"activation {value}\">{esc(shown)}"
                             f"<span class=\"{vclass}\"> ({value})</span></span>")
            excerpts.append(f"<li><p class=\"excerpt\">{''.join(spans)}</p></li>")
        return ("<section aria-labelledby=\"excerpts-h\"><h2 id=\"excerpts-h\">Top activating excerpts</h2>\n"
                "<p class=\"legend\">Shading shows how strongly the neuron activates on each token (darker = "
                f"stronger, scaled to the neuron's maximum {max_act:.2f}). Tokens at half the maximum or more are "
                "<span class=\"hi\">bold and underlined</span> with their activation in brackets; hover a token to "
                "see its activation. ↵ marks a line break.</p>\n"
                "<input type=\"checkbox\" id=\"allvalues\"> <label for=\"allvalues\" class=\"toggle\">Show the "
                "activation of every token</label>\n<ol class=\"excerpts\">" + "\n".join(excerpts) + "</ol></section>")

    def post_rate(self, conn, session, form) -> Response:
        rater = self.rater_of(conn, session)
        if rater is None or not self.csrf_ok(session, form):
            return self.error_page(403, "Your session expired or the form is stale. Please start again.")
        pages = store.assignment(conn, rater["id"])
        items = form.get("item", [])
        if len(items) != 1 or not items[0].isdigit() or not 1 <= int(items[0]) <= len(pages):
            return self.error_page(400, "This neuron is not assigned to you.")
        page = pages[int(items[0]) - 1]
        key = rater["hmac_key"]
        by_oid = {opaque_id(key, "explanation", eid): eid for eid in page["order"]}
        errors, scores, chosen = [], {}, {}
        allowed = {"csrf", "item", "best"} | {f"score-{oid}" for oid in by_oid}
        if unknown := [k for k in form if k not in allowed]:
            errors.append("The form contains answers for explanations that are not on this page.")
        if any(len(values) != 1 for values in form.values()):
            errors.append("Each question takes exactly one answer.")
        for oid, eid in by_oid.items():
            values = form.get(f"score-{oid}", [])
            if not values:
                errors.append("Please rate every explanation.")
                continue
            value = values[0]
            if len(value) == 1 and value in "12345":
                scores[eid] = int(value)
                chosen[f"score-{oid}"] = value
            else:
                errors.append("Ratings are whole numbers from 1 to 5.")
        best = form.get("best", [])
        best_eid = by_oid.get(best[0]) if len(best) == 1 else None
        if best_eid is None:
            errors.append("Choose exactly one best explanation from this page." if best else
                          "Please choose the best explanation.")
        else:
            chosen["best"] = best[0]
        if not errors and not unknown:
            try:
                store.record_item(conn, rater["id"], page["item_id"], scores, best_eid)
            except ValidationError as exc:
                errors.append(str(exc))
            except sqlite3.IntegrityError:
                errors.append("The answers could not be stored.")
            else:
                return redirect("/rate")
        errors = list(dict.fromkeys(errors))
        return self.item_page(conn, rater, session, page, pages, errors=errors, chosen=chosen, status=400)


# ------------------------------------------------------------------------------------------------ server
# waitress reads requests asynchronously in one I/O thread and hands only COMPLETE requests to its worker
# threads, so a client that connects and never finishes its request holds a socket, never a thread (wsgiref's
# threaded server held one thread per connection forever: 1,500 stalled connections, 1,500 threads).
SERVER_LIMITS = {
    # Seconds a connection may stay idle (no bytes received or sent, no request running) before it is closed.
    # A browser sends a whole request in milliseconds; an idle keep-alive connection is simply reopened.
    "channel_timeout": 30,
    # How often idle connections are looked for: a stalled one is closed 30-35 s after its last byte.
    "cleanup_interval": 5,
    # Open connections at most; beyond it waitress stops accepting (new ones wait in the listen backlog)
    # instead of running out of file descriptors. A study has tens of raters, a browser opens <= 6 each.
    "connection_limit": 200,
    # Worker threads that run the app. A request is a few ms of SQLite work and writes serialise on the
    # database's write lock anyway, so more threads would not serve raters faster.
    "threads": 8,
    # The largest real form (the scores of one neuron's explanations + CSRF token) is < 2 KiB; refuse bigger
    # bodies with 413 before buffering them (waitress's default would spool up to 1 GiB to disk).
    "max_request_body_size": MAX_BODY,
    # The only header of any size is the session cookie (43 characters).
    "max_request_header_size": 16 * 1024,
    "asyncore_use_poll": True,  # poll(), not select(): no FD_SETSIZE ceiling
}


class _AccessLog:
    """``host - [time] "METHOD path" status`` per request on stderr (waitress itself logs no requests)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        def logged(status, headers, exc_info=None):
            print(f"{environ.get('REMOTE_ADDR', '-')} - [{time.strftime('%d/%b/%Y %H:%M:%S')}] "
                  f"\"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}\" {status.split()[0]}",
                  file=sys.stderr, flush=True)
            return start_response(status, headers, exc_info)

        return self.app(environ, logged)


class HTTPServer:
    """A waitress server with the ``serve_forever`` / ``shutdown`` / ``server_close`` / ``server_port`` surface of
    ``socketserver`` (so it can run in a thread and be stopped from another)."""

    def __init__(self, app, host: str, port: int, **limits):
        from waitress import wasyncore
        from waitress.server import MultiSocketServer, create_server

        from waitress.trigger import trigger

        self._trigger_class = trigger
        self._loop = wasyncore.loop
        self._close_all = wasyncore.close_all
        self.limits = {**SERVER_LIMITS, **limits}
        self._server = create_server(app, host=host, port=port, ident="autointerp-human-eval", **self.limits)
        if isinstance(self._server, MultiSocketServer):  # a name that resolves to several addresses
            self._map, listen = self._server.map, self._server.effective_listen
        else:
            self._map, listen = self._server._map, [(self._server.effective_host, self._server.effective_port)]
        self.server_address = (listen[0][0], int(listen[0][1]))
        self.server_port = self.server_address[1]
        self._stop = threading.Event()
        self._running = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        self._running.set()
        adj = self._server.adj
        try:
            while not self._stop.is_set():
                self._loop(timeout=adj.asyncore_loop_timeout, map=self._map, use_poll=adj.asyncore_use_poll,
                           count=1)
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (from another thread) and wait until it has returned."""
        self._stop.set()
        if self._running.is_set():
            for dispatcher in list(self._map.values()):  # wake the poll now rather than after its timeout
                if isinstance(dispatcher, self._trigger_class):
                    dispatcher.pull_trigger()
                    break
            self._stopped.wait()

    def server_close(self) -> None:
        self._server.task_dispatcher.shutdown(timeout=5)
        self._close_all(self._map)


def make_http_server(db_path, host: str = "127.0.0.1", port: int = 8765, *, secure_cookies: bool = False,
                     allowed_hosts=None, quiet: bool = False, **limits) -> HTTPServer:
    """A waitress HTTP server for the study (``port=0``: any free port; ``server.server_port`` tells which);
    ``limits`` override :data:`SERVER_LIMITS` (waitress adjustments, e.g. a short ``channel_timeout`` in tests).

    Bound to a loopback address, only loopback Host headers are accepted (against DNS rebinding) unless
    ``allowed_hosts`` says otherwise."""
    if allowed_hosts is None and host in LOOPBACK_HOSTS:
        allowed_hosts = LOOPBACK_HOSTS
    app = HumanEvalApp(db_path, secure_cookies=secure_cookies, allowed_hosts=allowed_hosts)
    return HTTPServer(app if quiet else _AccessLog(app), host, port, **limits)


def serve(db_path, host: str = "127.0.0.1", port: int = 8765, **kwargs) -> None:
    server = make_http_server(db_path, host, port, **kwargs)
    shown = f"[{host}]" if ":" in host else host
    print(f"Serving study {db_path} on http://{shown}:{server.server_port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
