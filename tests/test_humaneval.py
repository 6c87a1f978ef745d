"""The blinded human evaluation (autointerp.human_eval): study database, assignment, blinding, validation,
idempotent and concurrent submissions, export and Table 5. Requests go straight to the WSGI app (no sockets)
except where the real threaded server is the point."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autointerp.human_eval import (StudyError, ValidationError, export_ratings, get_or_create_rater, init_rating_db,
                                  prepare_study, record_item, table5)
from autointerp.human_eval import store
from autointerp.human_eval.web import HumanEvalApp, make_http_server

# Distinctive format names: any appearance in a page is a leak, never a coincidence.
FORMATS = ["Zq1Original", "Zq2Summary", "Zq3Highlight", "Zq4HighlightSummary", "Zq5AVHS"]
NEURONS = [(0, 7), (3, 42)]


def write_inputs(folder: Path, *, formats=FORMATS, neurons=NEURONS, missing=()) -> tuple[Path, list[Path]]:
    """Hand-made records (5 train + 2 valid rows per neuron) and one explanations JSONL per format."""
    rows = []
    for layer, neuron in neurons:
        for split, n in (("train", 3), ("valid", 2)):
            for pos in range(n):
                tokens = ["The", " cat", " sat", "\n", " on", " <mat>", " &", " \"x\""]
                acts = [0.0, 0.1 * (pos + 1), 2.0 if pos == 0 else 0.9, -0.3, 0.5, 1.6, 0.0, 0.05]
                rows.append({"layer": layer, "neuron": neuron, "split": split, "position": pos,
                             "source": "top" if split == "train" else "random", "tokens": tokens,
                             "activations": acts, "max_activation": 2.0})
    records = folder / "records.parquet"
    pq.write_table(pa.Table.from_pylist(rows), records)
    files = []
    for fmt in formats:
        path = folder / f"{fmt}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for layer, neuron in neurons:
                if (fmt, (layer, neuron)) in missing:
                    continue
                for sample in (0, 1):
                    fh.write(json.dumps({"layer": layer, "neuron": neuron, "format": fmt, "sample": sample,
                                         "explanation": f"explanation {fmt[:3].lower()}{len(fmt)} of {layer}/{neuron}"
                                                        f" s{sample} <b>cats</b>", "valid": True}) + "\n")
        files.append(path)
    return records, files


@pytest.fixture
def study(tmp_path) -> Path:
    records, files = write_inputs(tmp_path)
    db = tmp_path / "study.sqlite"
    prepare_study(records, files, db, explainer="gpt-test", study_name="pilot", seed=7)
    return db


class Client:
    """A cookie-keeping client that calls the WSGI app directly."""

    def __init__(self, app):
        self.app, self.cookie = app, None

    def request(self, method, path, form=None, *, raw_body: bytes | None = None, host="127.0.0.1"):
        env = {}
        setup_testing_defaults(env)
        body = raw_body if raw_body is not None else (urlencode(form, doseq=True).encode() if form is not None else b"")
        env.update(REQUEST_METHOD=method, PATH_INFO=path, HTTP_HOST=host, CONTENT_LENGTH=str(len(body)),
                   CONTENT_TYPE="application/x-www-form-urlencoded", **{"wsgi.input": io.BytesIO(body)})
        if self.cookie:
            env["HTTP_COOKIE"] = self.cookie
        out = {}

        def start_response(status, headers):
            out["status"], out["headers"] = int(status.split()[0]), headers

        text = b"".join(self.app(env, start_response)).decode("utf-8")
        for key, value in out["headers"]:
            if key == "Set-Cookie":
                token = value.split(";")[0]
                self.cookie = None if token.endswith("=") else token
        return out["status"], out["headers"], text

    def csrf(self, page: str) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    def login(self, name: str) -> str:
        _, _, page = self.request("GET", "/")
        status, headers, _ = self.request("POST", "/start", {"csrf": self.csrf(page), "name": name})
        assert status == 303 and dict(headers)["Location"] == "/rate"
        status, _, page = self.request("GET", "/rate")
        assert status == 200
        return page


def form_of(page: str, score=lambda i: 3, best_index=0) -> dict:
    """The answers to the rendered item page: every explanation rated, one chosen best."""
    item = re.search(r'name="item" value="(\d+)"', page).group(1)
    oids = list(dict.fromkeys(re.findall(r'name="score-([0-9a-f]+)"', page)))
    form = {"csrf": re.search(r'name="csrf" value="([^"]+)"', page).group(1), "item": item,
            "best": oids[best_index]}
    for i, oid in enumerate(oids):
        form[f"score-{oid}"] = str(score(i))
    return form


def shown_texts(page: str) -> list[str]:
    return re.findall(r"Explanation [A-Z]: <q>([^<]*)</q>", page)


def count(db, table) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# ------------------------------------------------------------------------------------------------ preparation
def test_prepare_study_contents(study):
    with sqlite3.connect(study) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT name, explainer, seed, formats FROM studies").fetchone() == (
            "pilot", "gpt-test", 7, json.dumps(FORMATS))
        items = conn.execute("SELECT layer, neuron, max_activation, excerpts FROM items ORDER BY id").fetchall()
        assert [(r[0], r[1]) for r in items] == NEURONS
        excerpts = json.loads(items[0][3])
        assert len(excerpts) == 3 and excerpts[0]["tokens"][5] == " <mat>" and items[0][2] == 2.0
        assert conn.execute("SELECT COUNT(*) FROM explanations").fetchone()[0] == len(NEURONS) * len(FORMATS)
        assert conn.execute("SELECT DISTINCT sample FROM explanations").fetchall() == [(0,)]


def test_prepare_skips_incomplete_neurons_and_refuses_overwrite(tmp_path):
    records, files = write_inputs(tmp_path, missing={(FORMATS[2], NEURONS[1])})
    db = tmp_path / "s.sqlite"
    summary = prepare_study(records, files, db, explainer="e", study_name="s", seed=0)
    assert summary["items"] == 1 and summary["skipped"] == [
        {"layer": 3, "neuron": 42, "missing_formats": [FORMATS[2]]}]
    with pytest.raises(StudyError, match="exists"):
        prepare_study(records, files, db, explainer="e", study_name="s", seed=0)
    with pytest.raises(StudyError, match="not a study|no study"):
        store.connect(tmp_path / "records.parquet")


# ------------------------------------------------------------------------------------------------ assignment
def test_assignment_deterministic_per_rater_and_differs_between_raters(study, tmp_path):
    conn = store.connect(study)
    plans = {}
    for name in ["ada", "bob", "cy", "dee", "eve", "fay"]:
        rater = get_or_create_rater(conn, name)
        plans[name] = [(p["item_id"], p["order"]) for p in store.assignment(conn, rater["id"])]
        # a second call (resume, other case) returns the same rater and the same stored plan
        same = get_or_create_rater(conn, name.upper())
        assert same["id"] == rater["id"]
        assert [(p["item_id"], p["order"]) for p in store.assignment(conn, same["id"])] == plans[name]
    conn.close()
    assert len({json.dumps(p) for p in plans.values()}) > 1, "every rater got the same order"
    # deterministic: the same study seed and name give the same plan in an independently prepared study
    again = tmp_path / "again"
    again.mkdir()
    records, files = write_inputs(again)
    other = again / "study.sqlite"
    prepare_study(records, files, other, explainer="gpt-test", study_name="pilot", seed=7)
    conn = store.connect(other)
    rater = get_or_create_rater(conn, "eve")
    assert [(p["item_id"], p["order"]) for p in store.assignment(conn, rater["id"])] == plans["eve"]
    conn.close()
    # pure function of the seed
    assert store.assignment_plan(5, {1: [1, 2, 3], 2: [4, 5, 6]}) == store.assignment_plan(5, {2: [6, 5, 4],
                                                                                                 1: [3, 2, 1]})


def test_order_stable_across_reloads_and_differs_between_raters(study):
    app = HumanEvalApp(study)
    pages = {}
    for name in ["ada", "bob", "cy", "dee"]:
        client = Client(app)
        first = client.login(name)
        _, _, reload = client.request("GET", "/rate")
        assert shown_texts(first) == shown_texts(reload) and len(shown_texts(first)) == len(FORMATS)
        pages[name] = shown_texts(first)
        # resuming by name in a new browser shows the same page
        assert shown_texts(Client(app).login(name)) == pages[name]
    assert len({tuple(p) for p in pages.values()}) > 1


def test_invalid_names_rejected(study):
    app = HumanEvalApp(study)
    for bad in ["", "   ", "x" * 65, "a\nb", "tab\there", "\x00"]:
        client = Client(app)
        _, _, page = client.request("GET", "/")
        status, _, _ = client.request("POST", "/start", {"csrf": client.csrf(page), "name": bad})
        assert status == 400, bad
    assert count(study, "raters") == 0
    with pytest.raises(ValidationError):
        store.normalise_name("a\u2028b")
    assert store.normalise_name("  Ada Lovelace  ") == "Ada Lovelace" and store.normalise_name("é" * 64)


# ------------------------------------------------------------------------------------------------ blinding
def test_no_format_name_in_any_response(study):
    app = HumanEvalApp(study)
    client = Client(app)
    responses = [client.request("GET", "/"), client.request("GET", "/style.css")]
    _, _, page = client.request("GET", "/")
    responses.append(client.request("POST", "/start", {"csrf": client.csrf(page), "name": "Blind Rater"}))
    for _ in NEURONS:
        responses.append(client.request("GET", "/rate"))
        page = responses[-1][2]
        bad = form_of(page)
        bad[next(k for k in bad if k.startswith("score-"))] = "9"
        responses.append(client.request("POST", "/rate", bad))  # the re-rendered page with errors
        responses.append(client.request("POST", "/rate", form_of(page, best_index=1)))
    responses.append(client.request("GET", "/rate"))  # the thank-you page
    responses.append(client.request("GET", "/nope"))
    responses.append(client.request("POST", "/stop", {"csrf": client.csrf(responses[-2][2])}))
    assert "Thank you" in responses[-3][2]
    for status, headers, body in responses:
        blob = body + "\n" + "\n".join(f"{k}: {v}" for k, v in headers)
        for fmt in FORMATS:
            for needle in (fmt, fmt.lower(), fmt[3:]):  # also the plain name ("Summary", "AVHS", …)
                assert needle.lower() not in blob.lower(), (needle, status)
    # database ids never appear: fields are named by opaque per-rater HMACs
    item_pages = [r[2] for r in responses if 'name="item"' in r[2]]
    oids = set(re.findall(r'name="score-([^"]+)"', item_pages[0]))
    assert all(re.fullmatch(r"[0-9a-f]{20}", o) for o in oids) and len(oids) == len(FORMATS)


def test_opaque_ids_differ_between_raters(study):
    app = HumanEvalApp(study)
    a = set(re.findall(r'name="score-([^"]+)"', Client(app).login("ada")))
    b = set(re.findall(r'name="score-([^"]+)"', Client(app).login("bob")))
    assert a and b and not a & b


# ------------------------------------------------------------------------------------------------ submissions
def test_full_run_stores_ratings_and_shows_progress(study):
    client = Client(HumanEvalApp(study))
    page = client.login("Ada")
    assert "Neuron 1 of 2" in page
    status, headers, _ = client.request("POST", "/rate", form_of(page, score=lambda i: i + 1))
    assert status == 303
    _, _, page = client.request("GET", "/rate")
    assert "Neuron 2 of 2" in page
    client.request("POST", "/rate", form_of(page, score=lambda i: 5))
    _, _, page = client.request("GET", "/rate")
    assert "You have rated all 2 neurons" in page
    assert count(study, "ratings") == 2 * len(FORMATS) and count(study, "best_choices") == 2


def test_double_submit_is_idempotent(study):
    client = Client(HumanEvalApp(study))
    page = client.login("Ada")
    form = form_of(page, score=lambda i: 4)
    assert client.request("POST", "/rate", form)[0] == 303
    with sqlite3.connect(study) as conn:
        before = conn.execute("SELECT * FROM ratings ORDER BY id").fetchall()
        best_before = conn.execute("SELECT * FROM best_choices").fetchall()
    assert client.request("POST", "/rate", form)[0] == 303  # the same form again (double click, back + resend)
    with sqlite3.connect(study) as conn:
        assert conn.execute("SELECT * FROM ratings ORDER BY id").fetchall() == before  # timestamps unchanged too
        assert conn.execute("SELECT * FROM best_choices").fetchall() == best_before
    # a changed resubmission of the same item replaces the answers (last write wins), still no duplicates
    form2 = dict(form, **{k: "2" for k in form if k.startswith("score-")})
    assert client.request("POST", "/rate", form2)[0] == 303
    with sqlite3.connect(study) as conn:
        assert conn.execute("SELECT COUNT(*), MIN(score), MAX(score) FROM ratings").fetchone() == (len(FORMATS), 2, 2)
    assert count(study, "best_choices") == 1


@pytest.mark.parametrize("mutate", [
    "score0", "score6", "score_float", "score_text", "score_missing", "score_twice", "foreign_score", "foreign_best",
    "best_missing", "two_best", "bad_item", "other_item_best"])
def test_invalid_submissions_rejected_and_nothing_stored(study, mutate):
    app = HumanEvalApp(study)
    other = Client(app).login("Bob")  # another rater's page: its ids are foreign to Ada
    client = Client(app)
    page = client.login("Ada")
    form = form_of(page)
    first = next(k for k in form if k.startswith("score-"))
    foreign = re.search(r'name="score-([0-9a-f]+)"', other).group(1)
    pairs = list(form.items())
    if mutate == "score0":
        form[first] = "0"
    elif mutate == "score6":
        form[first] = "6"
    elif mutate == "score_float":
        form[first] = "3.0"
    elif mutate == "score_text":
        form[first] = "three"
    elif mutate == "score_missing":
        del form[first]
    elif mutate == "score_twice":
        pairs.append((first, "4"))
    elif mutate == "foreign_score":
        form[f"score-{foreign}"] = "3"
    elif mutate == "foreign_best":
        form["best"] = foreign
    elif mutate == "best_missing":
        del form["best"]
    elif mutate == "two_best":
        pairs.append(("best", re.findall(r'name="best" value="([^"]+)"', page)[1]))
    elif mutate == "bad_item":
        form["item"] = "99"
    elif mutate == "other_item_best":
        # an id of Ada's own OTHER item: valid for her, but not for this page
        client.request("POST", "/rate", form_of(page))
        _, _, page2 = client.request("GET", "/rate")
        form = form_of(page2)
        form["best"] = re.search(r'name="best" value="([^"]+)"', page).group(1)
    if mutate in ("score_twice", "two_best"):
        body = urlencode(pairs).encode()
        status, _, text = client.request("POST", "/rate", raw_body=body)
    else:
        status, _, text = client.request("POST", "/rate", form)
    assert status == 400
    expected = len(FORMATS) if mutate == "other_item_best" else 0
    assert count(study, "ratings") == expected and count(study, "best_choices") == expected // len(FORMATS)
    if mutate != "bad_item":
        assert 'role="alert"' in text and 'name="item"' in text  # the form again, with the problem named


def test_store_validation_direct(study):
    conn = store.connect(study)
    rater = get_or_create_rater(conn, "ada")
    page = store.assignment(conn, rater["id"])[0]
    scores = {eid: 3 for eid in page["order"]}
    for bad in ({**scores, page["order"][0]: 0}, {**scores, page["order"][0]: 6}, {**scores, page["order"][0]: 2.5},
                {**scores, page["order"][0]: True}, {k: v for k, v in list(scores.items())[1:]}, {**scores, 999: 3}):
        with pytest.raises(ValidationError):
            record_item(conn, rater["id"], page["item_id"], bad, page["order"][0])
    with pytest.raises(ValidationError):
        record_item(conn, rater["id"], page["item_id"], scores, 999)
    conn.close()
    assert count(study, "ratings") == 0
    with sqlite3.connect(study) as raw:  # the schema itself refuses out-of-range scores and foreign best choices
        raw.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("INSERT INTO ratings (rater_id, explanation_id, score, rated_at) VALUES (1, 1, 6, 'x')")
        other_item_expl = raw.execute("SELECT id FROM explanations WHERE item_id != ? LIMIT 1",
                                      (page["item_id"],)).fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("INSERT INTO best_choices (rater_id, item_id, explanation_id, chosen_at) VALUES (1, ?, ?, 'x')",
                        (page["item_id"], other_item_expl))


def test_csrf_and_sessions(study):
    app = HumanEvalApp(study)
    client = Client(app)
    page = client.login("Ada")
    form = form_of(page)
    assert client.request("POST", "/rate", dict(form, csrf="forged"))[0] == 403
    assert client.request("POST", "/rate", {k: v for k, v in form.items() if k != "csrf"})[0] == 403
    stranger = Client(app)  # no session: cannot post into Ada's study
    assert stranger.request("POST", "/rate", form)[0] == 403
    assert stranger.request("GET", "/rate")[0] == 303
    assert count(study, "ratings") == 0
    # the cookie is HttpOnly + SameSite=Strict, and only its hash is stored
    _, headers, _ = Client(app).request("GET", "/")
    cookie = dict(headers)["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    with sqlite3.connect(study) as conn:
        hashes = [r[0] for r in conn.execute("SELECT token_hash FROM sessions")]
    assert token not in hashes and len(hashes) >= 2
    # signing out ends the session
    assert client.request("POST", "/stop", {"csrf": form["csrf"]})[0] == 200
    assert client.request("GET", "/rate")[0] == 303


def test_raters_cannot_touch_each_other(study):
    app = HumanEvalApp(study)
    ada, bob = Client(app), Client(app)
    ada_page, bob_page = ada.login("Ada"), bob.login("Bob")
    # Bob posts Ada's form with his own CSRF token: Ada's ids are foreign on Bob's page
    forged = dict(form_of(ada_page), csrf=bob.csrf(bob_page))
    assert bob.request("POST", "/rate", forged)[0] == 400
    assert count(study, "ratings") == 0
    assert bob.request("POST", "/rate", form_of(bob_page))[0] == 303
    with sqlite3.connect(study) as conn:
        assert {r[0] for r in conn.execute("SELECT ra.name FROM ratings r JOIN raters ra ON ra.id = r.rater_id")} == {
            "Bob"}


def test_security_headers_and_hosts(study):
    app = HumanEvalApp(study, allowed_hosts={"127.0.0.1", "localhost"})
    client = Client(app)
    status, headers, _ = client.request("GET", "/")
    h = dict(headers)
    assert status == 200 and "default-src 'none'" in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY" and h["Cache-Control"] == "no-store"
    assert client.request("GET", "/", host="evil.example:8765")[0] == 400
    assert client.request("GET", "/", host="localhost:8765")[0] == 200
    assert client.request("PUT", "/rate")[0] == 405
    assert client.request("POST", "/rate", raw_body=b"x" * (70 * 1024))[0] == 413


def test_db_and_files_never_served(study):
    server = make_http_server(study, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        for path in ["/study.sqlite", f"/{study.name}", "/study.sqlite-wal", "/records.parquet", "/../study.sqlite",
                     "/static/study.sqlite", f"/{FORMATS[0]}.jsonl", "/style.css/../study.sqlite", "/%2e%2e/study.sqlite"]:
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path, timeout=10)
            assert err.value.code in (400, 404), path
            assert b"SQLite format" not in err.value.read()
        with urllib.request.urlopen(base + "/", timeout=10) as resp:
            assert resp.status == 200 and b"Your name" in resp.read()
    finally:
        server.shutdown()
        server.server_close()


def test_concurrent_raters(study):
    """Eight raters submit at once, each twice (a double click), through the threaded HTTP server."""
    server = make_http_server(study, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    names = [f"rater{i}" for i in range(8)]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def http(opener_cookie, method, path, form=None):
        data = urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(base + path, data=data, method=method)
        if opener_cookie[0]:
            req.add_header("Cookie", opener_cookie[0])
        try:
            resp = urllib.request.build_opener(NoRedirect).open(req, timeout=30)
        except urllib.error.HTTPError as exc:
            resp = exc
        for value in resp.headers.get_all("Set-Cookie") or []:
            opener_cookie[0] = value.split(";")[0]
        return resp.status if hasattr(resp, "status") else resp.code, resp.read().decode()

    forms, statuses = {}, []
    for name in names:  # log in and load the first page sequentially
        cookie = [None]
        _, page = http(cookie, "GET", "/")
        http(cookie, "POST", "/start", {"csrf": re.search(r'name="csrf" value="([^"]+)"', page).group(1), "name": name})
        _, page = http(cookie, "GET", "/rate")
        forms[name] = (cookie, form_of(page, score=lambda i, n=name: (i + int(n[-1])) % 5 + 1))
    barrier = threading.Barrier(len(names) * 2)

    def submit(name):
        cookie, form = forms[name]
        barrier.wait()
        statuses.append(http(list(cookie), "POST", "/rate", form)[0])

    threads = [threading.Thread(target=submit, args=(n,)) for n in names for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == [303] * len(threads)
    with sqlite3.connect(study) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == len(names) * len(FORMATS)
        assert conn.execute("SELECT COUNT(*) FROM best_choices").fetchone()[0] == len(names)
        assert conn.execute("SELECT COUNT(DISTINCT rater_id || ':' || explanation_id) FROM ratings").fetchone()[0] == (
            len(names) * len(FORMATS))


def _serve(study, **kwargs):
    server = make_http_server(study, port=0, quiet=True, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(10)
    assert not thread.is_alive()


def test_server_defaults_loopback_and_limits(study):
    server, thread = _serve(study)
    try:
        assert server.server_address[0] == "127.0.0.1"  # make_http_server's default host
        assert server.limits["channel_timeout"] == 30 and server.limits["connection_limit"] == 200
        assert server.limits["threads"] == 8 and server.limits["max_request_body_size"] == 64 * 1024
        req = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/rate", data=b"x" * (70 * 1024),
                                     method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as err:  # refused by waitress before the body is buffered
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 413
    finally:
        _stop(server, thread)


def test_stalled_connections_are_closed_and_do_not_block_others(study):
    """Slowloris: more stalled connections (a partial request, never finished) than worker threads. Other
    clients are answered meanwhile, and the server closes every stalled connection after channel_timeout."""
    server, thread = _serve(study, channel_timeout=1, cleanup_interval=1, threads=2)
    base = f"http://127.0.0.1:{server.server_port}"
    stalled = []
    try:
        for _ in range(12):
            sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # no end of headers, ever
            stalled.append(sock)
        started = time.monotonic()
        for _ in range(3):
            with urllib.request.urlopen(base + "/", timeout=5) as resp:
                assert resp.status == 200 and b"Your name" in resp.read()
        assert time.monotonic() - started < 5  # not queued behind the stalled ones
        for sock in stalled:
            try:
                assert sock.recv(1024) == b""  # closed by the server, without a response
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 9  # after ~1 s idle + <= 1 s until the next clean-up, not 10 s
        with urllib.request.urlopen(base + "/", timeout=5) as resp:
            assert resp.status == 200
    finally:
        for sock in stalled:
            sock.close()
        _stop(server, thread)


# ------------------------------------------------------------------------------------------------ export, Table 5
def _rate(db, answers):
    """answers: {rater: {(layer, neuron): ({format: score}, best_format)}} straight into the store."""
    conn = store.connect(db)
    ids = {(r["layer"], r["neuron"], r["format"]): (r["item_id"], r["id"]) for r in conn.execute(
        "SELECT e.id, e.item_id, e.format, i.layer, i.neuron FROM explanations e JOIN items i ON i.id = e.item_id")}
    for rater, items in answers.items():
        rid = get_or_create_rater(conn, rater)["id"]
        for (layer, neuron), (scores, best) in items.items():
            item_id = ids[(layer, neuron, best)][0]
            record_item(conn, rid, item_id, {ids[(layer, neuron, f)][1]: s for f, s in scores.items()},
                        ids[(layer, neuron, best)][1])
    conn.close()


def test_export_and_table5_by_hand(tmp_path):
    fmts = ["Orig", "Summ", "High"]
    records, files = write_inputs(tmp_path, formats=fmts)
    db = tmp_path / "study.sqlite"
    prepare_study(records, files, db, explainer="gpt-3.5", study_name="s1", seed=3)
    n1, n2 = NEURONS
    _rate(db, {
        "ann": {n1: ({"Orig": 2, "Summ": 5, "High": 3}, "Summ"), n2: ({"Orig": 4, "Summ": 4, "High": 1}, "Orig")},
        "ben": {n1: ({"Orig": 1, "Summ": 4, "High": 4}, "High"), n2: ({"Orig": 3, "Summ": 5, "High": 2}, "Summ")},
        "cat": {n1: ({"Orig": 3, "Summ": 3, "High": 5}, "High")},  # stopped after one neuron
    })
    rows = {r["format"]: r for r in table5([db], tmp_path / "table5.csv")}
    by_hand = {"Orig": ([2, 4, 1, 3, 3], 1), "Summ": ([5, 4, 4, 5, 3], 2), "High": ([3, 1, 4, 2, 5], 2)}
    for fmt, (scores, n_best) in by_hand.items():
        n = len(scores)
        mean = sum(scores) / n
        sem = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n)
        row = rows[fmt]
        assert row["n_ratings"] == 5 and row["n_choices"] == 5 and row["n_raters"] == 3 and row["n_items"] == 2
        assert row["mean"] == pytest.approx(mean) and row["sem"] == pytest.approx(sem)
        assert row["n_best"] == n_best and row["pct_best"] == pytest.approx(100 * n_best / 5)
    assert list(rows) == fmts  # the study's format order
    assert sum(r["pct_best"] for r in rows.values()) == pytest.approx(100)
    with open(tmp_path / "table5.csv", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert [r["format"] for r in written] == fmts and float(written[1]["mean"]) == pytest.approx(4.2)

    # exports (CSV and Parquet) carry the hidden labels and give the same Table 5; a second study pools
    assert export_ratings(db, tmp_path / "ratings.csv") == 15
    assert export_ratings(db, tmp_path / "ratings.parquet") == 15
    exported = pq.read_table(tmp_path / "ratings.parquet").to_pylist()
    assert {r["format"] for r in exported} == set(fmts) and sum(r["best"] for r in exported) == 5
    assert {r["position"] for r in exported} == {1, 2, 3}
    for source in (tmp_path / "ratings.csv", tmp_path / "ratings.parquet"):
        again = {r["format"]: r for r in table5([source])}
        assert all(again[f]["mean"] == pytest.approx(rows[f]["mean"]) and again[f]["n_best"] == rows[f]["n_best"]
                   for f in fmts)
    db2 = tmp_path / "study2.sqlite"
    prepare_study(records, files, db2, explainer="gpt-3.5", study_name="s2", seed=4)
    _rate(db2, {"ann": {n1: ({"Orig": 5, "Summ": 5, "High": 5}, "Orig")}})
    pooled = {r["format"]: r for r in table5([tmp_path / "ratings.csv", db2])}
    assert pooled["Orig"]["n_ratings"] == 6 and pooled["Orig"]["n_choices"] == 6 and pooled["Orig"]["n_best"] == 2
    assert pooled["Orig"]["n_studies"] == 2 and pooled["Orig"]["mean"] == pytest.approx(18 / 6)


def test_cli_prepare_export_table5(tmp_path, capsys):
    from autointerp.human_eval.__main__ import main

    folder = tmp_path / "explanations" / "random" / "gpt-x"
    folder.mkdir(parents=True)
    records, _ = write_inputs(folder, formats=["Fa", "Fb", "Fc"])
    (folder / "Fa.failures.jsonl").write_text("")
    db = tmp_path / "s.sqlite"
    assert main(["prepare", "--records", str(records), "--explanations-dir", str(folder), "--study-name", "cli",
                 "--out", str(db), "--neuron", "3:42"]) == 0
    assert "1 neurons × 3 formats" in capsys.readouterr().out
    conn = store.connect(db)
    assert conn.execute("SELECT explainer FROM studies").fetchone()[0] == "gpt-x"
    conn.close()
    _rate(db, {"ann": {(3, 42): ({"Fa": 1, "Fb": 2, "Fc": 3}, "Fc")}})
    assert main(["progress", "--db", str(db)]) == 0 and "1 / 1" in capsys.readouterr().out
    assert main(["export", "--db", str(db), "--out", str(tmp_path / "r.csv")]) == 0
    assert main(["table5", str(tmp_path / "r.csv"), "--out", str(tmp_path / "t5.csv")]) == 0
    out = capsys.readouterr().out
    assert "Fc" in out and "100.00 %" in out
    assert main(["serve", "--db", str(tmp_path / "missing.sqlite")]) == 1


# ------------------------------------------------------------------------------------------------ templates and rating databases
def _template(folder: Path, *, neurons=NEURONS, formats=FORMATS, edit=None, name="rnd-gpt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records, files = write_inputs(folder, formats=formats, neurons=neurons)
    if edit is not None:  # (format, text fragment to change) in that format's file
        path = folder / f"{edit[0]}.jsonl"
        path.write_text(path.read_text().replace(edit[1], edit[1] + " (revised)"))
    out = folder / "template.sqlite"
    prepare_study(records, files, out, explainer="gpt-test", study_name=name, seed=1, template=True)
    return out


def _ratings(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT r.name, e.format, i.layer, i.neuron, x.score, x.rated_at FROM ratings x "
                            "JOIN raters r ON r.id = x.rater_id JOIN explanations e ON e.id = x.explanation_id "
                            "JOIN items i ON i.id = e.item_id ORDER BY 1, 2, 3, 4").fetchall() + conn.execute(
            "SELECT rater_id, item_id, explanation_id, chosen_at FROM best_choices ORDER BY 1, 2").fetchall()


def test_template_is_never_rated(tmp_path, capsys):
    from autointerp.human_eval.__main__ import main

    template = _template(tmp_path / "t")
    for attempt in (lambda: store.connect(template), lambda: HumanEvalApp(template),
                    lambda: make_http_server(template, port=0), lambda: table5([template]),
                    lambda: export_ratings(template, tmp_path / "x.csv")):
        with pytest.raises(StudyError, match="study template.*init --template"):
            attempt()
    assert main(["serve", "--db", str(template)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "init --template" in err
    with sqlite3.connect(template) as conn:  # a template has the items, no raters, and no WAL
        assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 2
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_init_never_erases_or_changes_ratings(tmp_path):
    template = _template(tmp_path / "t")
    db = tmp_path / "human_eval" / "pilot.sqlite"
    info = init_rating_db(template, db)
    assert info == {"db": str(db), "created": True, "items": 2, "added": 2, "kept_not_in_template": 0, "raters": 0}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT name FROM studies").fetchone()[0] == "rnd-gpt"
    n1, n2 = NEURONS
    fmts = dict.fromkeys(FORMATS, 4)
    _rate(db, {"ann": {n1: ({**fmts, FORMATS[1]: 5}, FORMATS[1]), n2: ({**fmts, FORMATS[0]: 1}, FORMATS[2])},
               "ben": {n1: ({**fmts, FORMATS[3]: 2}, FORMATS[4])}})
    ratings = _ratings(db)
    table5([db], tmp_path / "t5.csv")
    t5_bytes = (tmp_path / "t5.csv").read_bytes()
    assert len(ratings) == 3 * len(FORMATS) + 3

    def unchanged():
        assert _ratings(db) == ratings
        table5([db], tmp_path / "t5.csv")
        assert (tmp_path / "t5.csv").read_bytes() == t5_bytes

    # the same template again: nothing to add, nothing changed
    assert init_rating_db(template, db)["added"] == 0
    unchanged()
    # a rebuilt template (a rerun of the rule) with a new neuron: added, and appended to started raters' pages
    newer = _template(tmp_path / "t2", neurons=[*NEURONS, (5, 9)])
    info = init_rating_db(newer, db)
    assert (info["created"], info["items"], info["added"], info["raters"]) == (False, 3, 1, 2)
    unchanged()
    conn = store.connect(db)
    for name in ("ann", "ben"):
        pages = store.assignment(conn, get_or_create_rater(conn, name)["id"])
        assert [p["position"] for p in pages] == [1, 2, 3] and len(pages[2]["order"]) == len(FORMATS)
    conn.close()
    # a template that lists fewer neurons (e.g. a smaller max_items) deletes nothing
    info = init_rating_db(_template(tmp_path / "t3", neurons=[n1]), db)
    assert (info["added"], info["kept_not_in_template"], info["items"]) == (0, 2, 3)
    unchanged()
    # conflicting templates are refused in one line and change nothing
    conflicts = [(_template(tmp_path / "t4", edit=(FORMATS[2], "of 3/42")), "1 neuron\\(s\\) differ .*layer 3 "
                  "neuron 42, explanation\\(s\\) Zq3Highlight differ"),
                 (_template(tmp_path / "t5", formats=FORMATS[:3]), "formats"),
                 (_template(tmp_path / "t6", name="other"), None)]
    for bad, match in conflicts:
        if match is None:  # another study name alone is no conflict (the database keeps its own name)
            assert init_rating_db(bad, db)["added"] == 0
            continue
        with pytest.raises(StudyError, match=match) as err:
            init_rating_db(bad, db)
        assert "\n" not in str(err.value) and "nothing was changed" in str(err.value)
        unchanged()
    with pytest.raises(StudyError, match="study template"):  # the arguments swapped: a template is no rating db
        init_rating_db(db, template)
    records, files = write_inputs(tmp_path / "t")
    with pytest.raises(StudyError, match="ratings of 2 rater"):  # prepare never overwrites a rated study
        prepare_study(records, files, db, explainer="gpt-test", study_name="x", seed=1, overwrite=True)
    unchanged()


def test_cli_init(tmp_path, capsys):
    from autointerp.human_eval.__main__ import main

    template = _template(tmp_path / "t")
    db = tmp_path / "human_eval" / "s.sqlite"
    assert main(["init", "--template", str(template), "--db", str(db), "--study-name", "pilot"]) == 0
    assert "created; 2 neurons (2 new), 0 rater(s)" in capsys.readouterr().out
    _rate(db, {"ann": {NEURONS[0]: (dict.fromkeys(FORMATS, 3), FORMATS[0])}})
    assert main(["init", "--template", str(template), "--db", str(db)]) == 0
    assert "updated; 2 neurons (0 new), 1 rater(s)" in capsys.readouterr().out
    bad = _template(tmp_path / "t2", edit=(FORMATS[0], "of 0/7"))
    assert main(["init", "--template", str(bad), "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "conflicts with" in err
    assert [r["study"] for r in store.export_rows(db)] == ["pilot"] * len(FORMATS)
