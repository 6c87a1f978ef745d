"""The study database: one SQLite file per study (schema, preparation, assignment, submissions, export, Table 5).

Tables
------
``studies``       one row: name, explainer, seed, sample, where the inputs came from.
``items``         one per neuron (layer, neuron), its top excerpts as JSON (tokens + activations) and max activation.
``explanations``  one per (item, format): the hidden format label and the text shown to raters.
``raters``        name as typed, a case-folded key (UNIQUE), the per-rater randomisation seed, a random HMAC key.
``assignments``   (rater, position) -> item, plus the order of the item's explanations for that rater.
``ratings``       (rater, explanation) -> score 1..5, UNIQUE(rater, explanation): a repeated submit updates.
``best_choices``  (rater, item) -> explanation, UNIQUE(rater, item); a trigger checks the explanation's item.
``sessions``      server-side web sessions (sha256 of the cookie token, the rater once named, the CSRF token).

Templates and rating databases
------------------------------
The workflow's rule ``prepare_human_study`` writes a study *template* (``prepare_study(..., template=True)``):
the same schema with the blinded items and no raters, marked by ``PRAGMA application_id = TEMPLATE_APP_ID``.
It is a rule output, so a rerun may replace it at any time; :func:`connect` therefore refuses to open one for
rating. People rate a *rating database* that :func:`init_rating_db` creates from a template in a folder no rule
writes (``human_eval/``). Re-initialising from a newer template only adds new neurons; it never deletes or
changes an item, a rater or a rating, and refuses (one line, nothing written) when the template's items conflict.

Writes run in ``BEGIN IMMEDIATE`` transactions on WAL-mode files with a busy timeout, so concurrent raters (one
connection per request) serialise their short writes instead of failing. A submission (all scores of an item
plus its best choice) is one transaction: an item is either fully recorded or not at all.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import random
import secrets
import sqlite3
import tempfile
import time
import unicodedata
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from autointerp.common.io import read_jsonl, read_parquet, write_csv
from autointerp.simulate.scoring import mean_sem

SCHEMA_VERSION = 1
TEMPLATE_APP_ID = 0x68657654  # "hevT": PRAGMA application_id of a study template (rating databases keep 0)
MAX_NAME_LENGTH = 64
SCORE_LABELS = {1: "Strongly Disagree", 2: "Disagree", 3: "Neither agree nor disagree", 4: "Agree",
                5: "Strongly Agree"}

SCHEMA = """
CREATE TABLE studies (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    explainer TEXT NOT NULL,
    seed INTEGER NOT NULL,
    sample INTEGER NOT NULL,
    formats TEXT NOT NULL,            -- JSON list, in the order the explanation files were given
    records_path TEXT NOT NULL,
    explanation_files TEXT NOT NULL,  -- JSON list
    created_at TEXT NOT NULL,
    schema_version INTEGER NOT NULL
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    layer INTEGER NOT NULL,
    neuron INTEGER NOT NULL,
    max_activation REAL NOT NULL,
    excerpts TEXT NOT NULL,           -- JSON [{"tokens": [...], "activations": [...]}], split 'train' in order
    UNIQUE (layer, neuron)
);
CREATE TABLE explanations (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id),
    format TEXT NOT NULL,             -- hidden from raters; for analysis only
    sample INTEGER NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (item_id, format)
);
CREATE TABLE raters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    hmac_key BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE assignments (
    rater_id INTEGER NOT NULL REFERENCES raters (id),
    position INTEGER NOT NULL,        -- 1-based page number for this rater
    item_id INTEGER NOT NULL REFERENCES items (id),
    explanation_order TEXT NOT NULL,  -- JSON list of explanation ids, as shown to this rater
    PRIMARY KEY (rater_id, position),
    UNIQUE (rater_id, item_id)
);
CREATE TABLE ratings (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters (id),
    explanation_id INTEGER NOT NULL REFERENCES explanations (id),
    score INTEGER NOT NULL CHECK (typeof(score) = 'integer' AND score BETWEEN 1 AND 5),
    rated_at TEXT NOT NULL,
    UNIQUE (rater_id, explanation_id)
);
CREATE TABLE best_choices (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters (id),
    item_id INTEGER NOT NULL REFERENCES items (id),
    explanation_id INTEGER NOT NULL REFERENCES explanations (id),
    chosen_at TEXT NOT NULL,
    UNIQUE (rater_id, item_id)
);
CREATE TRIGGER best_choice_item_insert BEFORE INSERT ON best_choices
WHEN (SELECT item_id FROM explanations WHERE id = NEW.explanation_id) IS NOT NEW.item_id
BEGIN SELECT RAISE(ABORT, 'best choice: explanation does not belong to the item'); END;
CREATE TRIGGER best_choice_item_update BEFORE UPDATE ON best_choices
WHEN (SELECT item_id FROM explanations WHERE id = NEW.explanation_id) IS NOT NEW.item_id
BEGIN SELECT RAISE(ABORT, 'best choice: explanation does not belong to the item'); END;
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    rater_id INTEGER REFERENCES raters (id),
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX sessions_created ON sessions (created_at);
"""


class StudyError(ValueError):
    """Bad input to prepare a study, or a file that is not a study."""


class ValidationError(ValueError):
    """A submission that cannot be stored (nothing was written)."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------------------- connections
def template_error(path) -> StudyError:
    return StudyError(
        f"{path} is a study template (a workflow output that any rerun replaces), not a rating database; create "
        f"one outside results/ and rate that: python -m autointerp.human_eval init --template {path} "
        "--db human_eval/<name>.sqlite")


def connect(db_path, *, timeout: float = 30.0, template_ok: bool = False,
            readonly: bool = False) -> sqlite3.Connection:
    """Open an existing study (never creates a file). Autocommit mode: use :func:`transaction`.

    A study template is refused (:func:`template_error`) unless ``template_ok``: nobody rates a rule output."""
    path = Path(db_path)
    if not path.is_file():
        raise StudyError(f"no study database at {path}")
    mode = "ro" if readonly else "rw"
    conn = sqlite3.connect(f"file:{path.resolve()}?mode={mode}", uri=True, timeout=timeout, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    try:
        row = conn.execute("SELECT schema_version FROM studies WHERE id = 1").fetchone()
        template = conn.execute("PRAGMA application_id").fetchone()[0] == TEMPLATE_APP_ID
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StudyError(f"{path} is not a study database: {exc}") from None
    if row is None or row[0] != SCHEMA_VERSION:
        conn.close()
        raise StudyError(f"{path}: unsupported study schema {row[0] if row else None!r}")
    if template and not template_ok:
        conn.close()
        raise template_error(path)
    return conn


def is_template(conn: sqlite3.Connection) -> bool:
    return conn.execute("PRAGMA application_id").fetchone()[0] == TEMPLATE_APP_ID


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on any error): takes the write lock up front, so two writers
    queue on the busy timeout instead of deadlocking on a read-to-write upgrade."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --------------------------------------------------------------------------------------------------- preparation
def _train_excerpts(records_path) -> dict[tuple[int, int], dict]:
    table = read_parquet(records_path)
    need = {"layer", "neuron", "split", "tokens", "activations"}
    if missing := need - set(table.column_names):
        raise StudyError(f"{records_path}: records lack columns {sorted(missing)}")
    cols = [c for c in ("layer", "neuron", "split", "position", "source", "tokens", "activations", "max_activation")
            if c in table.column_names]
    by: dict[tuple[int, int], dict] = {}
    for row in table.select(cols).to_pylist():
        if row["split"] != "train":
            continue
        key = (int(row["layer"]), int(row["neuron"]))
        entry = by.setdefault(key, {"rows": [], "max_activation": None})
        entry["rows"].append(row)
        if row.get("max_activation") is not None:
            entry["max_activation"] = float(row["max_activation"])
    out = {}
    for key, entry in by.items():
        rows = sorted(entry["rows"], key=lambda r: r.get("position", 0))
        excerpts = []
        for r in rows:
            tokens = [str(t) for t in r["tokens"]]
            acts = [float(a) for a in r["activations"]]
            if len(tokens) != len(acts):
                raise StudyError(f"{records_path}: neuron {key}: {len(tokens)} tokens but {len(acts)} activations")
            excerpts.append({"tokens": tokens, "activations": [a if math.isfinite(a) else 0.0 for a in acts]})
        max_act = entry["max_activation"]
        if max_act is None or not math.isfinite(max_act):
            max_act = max((a for e in excerpts for a in e["activations"]), default=0.0)
        out[key] = {"excerpts": excerpts, "max_activation": max_act}
    return out


def _explanations(files: Sequence, sample: int) -> tuple[list[str], dict[tuple[int, int], dict[str, str]]]:
    formats: list[str] = []
    texts: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)
    for path in files:
        path = Path(path)
        if path.name.endswith(".failures.jsonl"):
            raise StudyError(f"{path}: a failures file, not explanations")
        file_formats = set()
        for line in read_jsonl(path):
            fmt = str(line.get("format") or path.stem)
            file_formats.add(fmt)
            if int(line.get("sample", 0)) != sample or line.get("valid") is False:
                continue
            text = line.get("explanation")
            if not isinstance(text, str) or not text.strip():
                continue
            key = (int(line["layer"]), int(line["neuron"]))
            if fmt in texts[key]:
                raise StudyError(f"{path}: two explanations for neuron {key}, format {fmt!r}, sample {sample}")
            texts[key][fmt] = text.strip()
        if not file_formats:
            file_formats = {path.stem}
        for fmt in sorted(file_formats):
            if fmt in formats:
                raise StudyError(f"format {fmt!r} appears in more than one explanation file")
            formats.append(fmt)
    return formats, dict(texts)


def _rated(path: Path) -> int:
    """How many raters an existing study file holds (0 for a template or a file that is not a study)."""
    try:
        conn = connect(path, template_ok=True, readonly=True)
    except StudyError:
        return 0
    try:
        return conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0]
    finally:
        conn.close()


def _build_db(out_db: Path, fill, *, template: bool, replace: bool) -> None:
    """Create a study file under a temporary name, ``fill(conn)`` it in one transaction, then move it into place
    (mode 0600: it holds raters' names and the hidden labels). ``replace=False`` never clobbers: the final step
    is a hard link, which fails if another process created ``out_db`` meanwhile."""
    out_db.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_db.name}.", suffix=".tmp", dir=out_db.parent)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(SCHEMA)
            if template:
                conn.execute(f"PRAGMA application_id = {TEMPLATE_APP_ID}")
            with transaction(conn):
                fill(conn)
            # A template is read once by `init`; a rating database is written by concurrent raters.
            conn.execute(f"PRAGMA journal_mode = {'DELETE' if template else 'WAL'}")
        finally:
            conn.close()
        os.chmod(tmp, 0o600)
        if replace:
            os.replace(tmp, out_db)
        else:
            try:
                os.link(tmp, out_db)
            except FileExistsError:
                raise StudyError(f"{out_db} appeared while it was being created; nothing was overwritten") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def prepare_study(records_path, explanation_files: list, out_db, *, explainer: str, study_name: str, seed: int,
                  sample: int = 0, neurons: Iterable[tuple[int, int]] | None = None, max_items: int | None = None,
                  overwrite: bool = False, template: bool = False) -> dict:
    """Build a study database from a records Parquet and one explanation JSONL per format.

    Items are the neurons that have top excerpts (split ``train``) and a valid explanation (``sample``) in EVERY
    format; neurons missing a format are skipped (listed in the returned summary) so that each rater compares
    the same set of formats. ``neurons`` restricts the items; ``max_items`` keeps a ``seed``-drawn subset.
    ``template=True`` marks the file as a study template (what the workflow writes): it cannot be rated, only
    turned into a rating database by :func:`init_rating_db`.
    The file is built under a temporary name and renamed into place; an existing study is refused unless
    ``overwrite``, and a study that holds raters is never overwritten. Returns ``{"db", "items", "formats",
    "skipped"}``.
    """
    out_db = Path(out_db)
    if out_db.exists():
        if not overwrite:
            raise StudyError(f"{out_db} exists; a study is never overwritten implicitly (pass overwrite=True)")
        if n := _rated(out_db):
            raise StudyError(f"{out_db} holds the ratings of {n} rater(s); a rated study is never overwritten")
    if not explanation_files:
        raise StudyError("no explanation files")
    excerpts = _train_excerpts(records_path)
    formats, texts = _explanations(explanation_files, sample)
    keys = sorted(excerpts)
    if neurons is not None:
        wanted = {(int(a), int(b)) for a, b in neurons}
        if unknown := wanted - set(keys):
            raise StudyError(f"neurons without top excerpts in {records_path}: {sorted(unknown)}")
        keys = [k for k in keys if k in wanted]
    complete, skipped = [], []
    for key in keys:
        missing = [f for f in formats if f not in texts.get(key, {})]
        (skipped if missing else complete).append((key, missing) if missing else key)
    if max_items is not None and len(complete) > max_items:
        complete = sorted(random.Random(seed).sample(complete, max_items))

    def fill(conn):
        conn.execute(
            "INSERT INTO studies (id, name, explainer, seed, sample, formats, records_path, "
            "explanation_files, created_at, schema_version) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (study_name, explainer, int(seed), int(sample), json.dumps(formats), str(records_path),
             json.dumps([str(p) for p in explanation_files]), utc_now(), SCHEMA_VERSION))
        for key in complete:
            entry = excerpts[key]
            item_id = conn.execute(
                "INSERT INTO items (layer, neuron, max_activation, excerpts) VALUES (?, ?, ?, ?)",
                (key[0], key[1], entry["max_activation"], json.dumps(entry["excerpts"]))).lastrowid
            for fmt in formats:
                conn.execute("INSERT INTO explanations (item_id, format, sample, text) VALUES (?, ?, ?, ?)",
                             (item_id, fmt, int(sample), texts[key][fmt]))

    _build_db(out_db, fill, template=template, replace=True)
    return {"db": str(out_db), "items": len(complete), "formats": formats,
            "skipped": [{"layer": k[0], "neuron": k[1], "missing_formats": m} for k, m in skipped]}


# --------------------------------------------------------------------------------------------------- rating databases
def _study_items(conn: sqlite3.Connection) -> dict[tuple[int, int], dict]:
    """(layer, neuron) -> {"id", "max_activation", "excerpts" (parsed), "texts": {format: text}}."""
    out = {}
    for r in conn.execute("SELECT id, layer, neuron, max_activation, excerpts FROM items ORDER BY id"):
        out[(r["layer"], r["neuron"])] = {"id": r["id"], "max_activation": r["max_activation"],
                                          "excerpts": json.loads(r["excerpts"]), "texts": {}}
    by_id = {v["id"]: v for v in out.values()}
    for r in conn.execute("SELECT item_id, format, text FROM explanations ORDER BY id"):
        by_id[r["item_id"]]["texts"][r["format"]] = r["text"]
    return out


def _item_difference(new: dict, old: dict) -> str | None:
    if new["texts"] != old["texts"]:
        changed = sorted(f for f in set(new["texts"]) | set(old["texts"])
                         if new["texts"].get(f) != old["texts"].get(f))
        return f"explanation(s) {', '.join(changed)} differ"
    if new["excerpts"] != old["excerpts"] or not math.isclose(new["max_activation"], old["max_activation"],
                                                             rel_tol=1e-9, abs_tol=1e-12):
        return "top excerpts differ"
    return None


def _insert_item(conn: sqlite3.Connection, key: tuple[int, int], item: dict, formats: list[str],
                 sample: int) -> tuple[int, list[int]]:
    item_id = conn.execute("INSERT INTO items (layer, neuron, max_activation, excerpts) VALUES (?, ?, ?, ?)",
                           (key[0], key[1], item["max_activation"], json.dumps(item["excerpts"]))).lastrowid
    expl = [conn.execute("INSERT INTO explanations (item_id, format, sample, text) VALUES (?, ?, ?, ?)",
                         (item_id, fmt, sample, item["texts"][fmt])).lastrowid for fmt in formats]
    return item_id, expl


def init_rating_db(template, db, *, study_name: str | None = None) -> dict:
    """Create the rating database ``db`` from a study template (or any study file), or add a newer template's
    new neurons to an existing one.

    A new ``db`` gets the template's study (``study_name`` renames it), items and explanations, and no raters.
    An existing ``db`` is never replaced: neurons of the template that it lacks are added (and appended, in a
    per-rater seeded order, to the assignments of raters who already started); neurons it has are left alone,
    as are neurons the template no longer lists. If the template disagrees with ``db`` on the explainer, the
    formats, the explanation sample, or any shared neuron's excerpts or explanation texts, StudyError (one line)
    and nothing is written. Returns ``{"db", "created", "items", "added", "kept_not_in_template", "raters"}``.
    """
    template, db = Path(template), Path(db)
    src = connect(template, template_ok=True, readonly=True)
    try:
        study = dict(src.execute("SELECT * FROM studies WHERE id = 1").fetchone())
        items = _study_items(src)
    finally:
        src.close()
    formats = json.loads(study["formats"])
    sample = int(study["sample"])

    if not db.exists():
        def fill(conn):
            conn.execute(
                "INSERT INTO studies (id, name, explainer, seed, sample, formats, records_path, explanation_files, "
                "created_at, schema_version) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (study_name or study["name"], study["explainer"], study["seed"], sample, study["formats"],
                 study["records_path"], study["explanation_files"], utc_now(), SCHEMA_VERSION))
            for key, item in items.items():
                _insert_item(conn, key, item, formats, sample)

        _build_db(db, fill, template=False, replace=False)
        return {"db": str(db), "created": True, "items": len(items), "added": len(items),
                "kept_not_in_template": 0, "raters": 0}

    conn = connect(db)  # refuses a template given as --db
    try:
        with transaction(conn):
            have = dict(conn.execute("SELECT * FROM studies WHERE id = 1").fetchone())
            where = f"{template} conflicts with {db}"
            for field in ("explainer", "sample"):
                if have[field] != study[field]:
                    raise StudyError(f"{where}: {field} {study[field]!r} ≠ {have[field]!r}; nothing was changed")
            if json.loads(have["formats"]) != formats:
                raise StudyError(f"{where}: formats {formats} ≠ {json.loads(have['formats'])}; nothing was changed")
            existing = _study_items(conn)
            conflicts = [(key, why) for key in sorted(set(items) & set(existing))
                         if (why := _item_difference(items[key], existing[key]))]
            if conflicts:
                (layer, neuron), why = conflicts[0]
                raise StudyError(f"{where}: {len(conflicts)} neuron(s) differ (first: layer {layer} neuron {neuron}, "
                                 f"{why}); nothing was changed")
            added: dict[int, list[int]] = {}
            for key in sorted(set(items) - set(existing)):
                item_id, expl = _insert_item(conn, key, items[key], formats, sample)
                added[item_id] = expl
            raters = conn.execute("SELECT id, seed FROM raters ORDER BY id").fetchall()
            if added:
                for rater in raters:
                    last = conn.execute("SELECT COALESCE(MAX(position), 0) FROM assignments WHERE rater_id = ?",
                                        (rater["id"],)).fetchone()[0]
                    for position, (item_id, expl) in enumerate(assignment_plan(rater["seed"], added), start=last + 1):
                        conn.execute("INSERT INTO assignments (rater_id, position, item_id, explanation_order) "
                                     "VALUES (?, ?, ?, ?)", (rater["id"], position, item_id, json.dumps(expl)))
            total = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        conn.close()
    return {"db": str(db), "created": False, "items": total, "added": len(added),
            "kept_not_in_template": len(set(existing) - set(items)), "raters": len(raters)}


# --------------------------------------------------------------------------------------------------- raters
def normalise_name(name) -> str:
    """A rater's name: NFC, surrounding whitespace stripped, 1–64 printable characters; else ValidationError."""
    if not isinstance(name, str):
        raise ValidationError("Please enter your name.")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise ValidationError("Please enter your name.")
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"Your name can have at most {MAX_NAME_LENGTH} characters.")
    if not name.isprintable():
        raise ValidationError("Your name can only contain printable characters (no line breaks or tabs).")
    return name


def name_key(name: str) -> str:
    """The identity of a rater: the normalised name, case-folded ("Ada" and "ada" are the same rater)."""
    return unicodedata.normalize("NFC", normalise_name(name).casefold())


def rater_seed(study_seed: int, key: str) -> int:
    """The per-rater randomisation seed: a hash of the study seed and the rater's name key (reproducible)."""
    digest = hashlib.sha256(f"{int(study_seed)}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # fits SQLite's signed 64-bit integer


def assignment_plan(seed: int, items: dict[int, list[int]]) -> list[tuple[int, list[int]]]:
    """[(item_id, explanation ids in display order)] in this rater's page order; pure function of its inputs."""
    order = sorted(items)
    random.Random(seed).shuffle(order)
    plan = []
    for item_id in order:
        expl = sorted(items[item_id])
        random.Random(f"{seed}:{item_id}").shuffle(expl)
        plan.append((item_id, expl))
    return plan


def get_or_create_rater(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    """The rater with this name (case-insensitive), created with its assignment if new."""
    name = normalise_name(name)
    key = name_key(name)
    with transaction(conn):
        row = conn.execute("SELECT * FROM raters WHERE name_key = ?", (key,)).fetchone()
        if row is not None:
            return row
        study_seed = conn.execute("SELECT seed FROM studies WHERE id = 1").fetchone()[0]
        seed = rater_seed(study_seed, key)
        rater_id = conn.execute(
            "INSERT INTO raters (name, name_key, seed, hmac_key, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, key, seed, secrets.token_bytes(32), utc_now())).lastrowid
        items: dict[int, list[int]] = defaultdict(list)
        for r in conn.execute("SELECT id, item_id FROM explanations"):
            items[r["item_id"]].append(r["id"])
        for r in conn.execute("SELECT id FROM items"):
            items.setdefault(r["id"], [])
        for position, (item_id, expl) in enumerate(assignment_plan(seed, items), start=1):
            conn.execute("INSERT INTO assignments (rater_id, position, item_id, explanation_order) VALUES (?, ?, ?, ?)",
                         (rater_id, position, item_id, json.dumps(expl)))
        return conn.execute("SELECT * FROM raters WHERE id = ?", (rater_id,)).fetchone()


def rater_by_id(conn: sqlite3.Connection, rater_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM raters WHERE id = ?", (rater_id,)).fetchone()


def assignment(conn: sqlite3.Connection, rater_id: int) -> list[dict]:
    """This rater's pages in order: position, item_id, explanation order, done (best choice recorded)."""
    rows = conn.execute(
        "SELECT a.position, a.item_id, a.explanation_order, b.id IS NOT NULL AS done FROM assignments a "
        "LEFT JOIN best_choices b ON b.rater_id = a.rater_id AND b.item_id = a.item_id "
        "WHERE a.rater_id = ? ORDER BY a.position", (rater_id,)).fetchall()
    return [{"position": r["position"], "item_id": r["item_id"], "order": json.loads(r["explanation_order"]),
             "done": bool(r["done"])} for r in rows]


def item_view(conn: sqlite3.Connection, item_id: int, order: Sequence[int]) -> dict:
    """What a rater may see of an item: excerpts, max activation and the explanation texts in ``order``.
    The format labels are not selected."""
    item = conn.execute("SELECT max_activation, excerpts FROM items WHERE id = ?", (item_id,)).fetchone()
    texts = {r["id"]: r["text"] for r in conn.execute("SELECT id, text FROM explanations WHERE item_id = ?",
                                                       (item_id,))}
    return {"max_activation": item["max_activation"], "excerpts": json.loads(item["excerpts"]),
            "explanations": [(eid, texts[eid]) for eid in order]}


def record_item(conn: sqlite3.Connection, rater_id: int, item_id: int, scores: dict[int, int],
                best_explanation_id: int) -> bool:
    """Store one item's ratings and best choice for ``rater_id`` in one transaction.

    ``scores`` must cover exactly the item's explanations, each an int 1..5, and the best choice must be one of
    them; otherwise ValidationError and nothing is written. A repeated submission UPSERTs (UNIQUE(rater,
    explanation) / UNIQUE(rater, item)): an identical one changes nothing (timestamps kept), a different one
    replaces the earlier answer. Returns True when anything changed.
    """
    with transaction(conn):
        if conn.execute("SELECT 1 FROM assignments WHERE rater_id = ? AND item_id = ?",
                        (rater_id, item_id)).fetchone() is None:
            raise ValidationError("This neuron is not assigned to you.")
        expl_ids = {r[0] for r in conn.execute("SELECT id FROM explanations WHERE item_id = ?", (item_id,))}
        if set(scores) != expl_ids:
            raise ValidationError("Every explanation of this neuron needs exactly one rating.")
        for score in scores.values():
            if type(score) is not int or not 1 <= score <= 5:
                raise ValidationError("Ratings are whole numbers from 1 to 5.")
        if best_explanation_id not in expl_ids:
            raise ValidationError("Choose the best explanation of this neuron.")
        now = utc_now()
        before = conn.total_changes
        for eid, score in sorted(scores.items()):
            conn.execute(
                "INSERT INTO ratings (rater_id, explanation_id, score, rated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rater_id, explanation_id) DO UPDATE SET score = excluded.score, "
                "rated_at = excluded.rated_at WHERE ratings.score IS NOT excluded.score",
                (rater_id, eid, score, now))
        conn.execute(
            "INSERT INTO best_choices (rater_id, item_id, explanation_id, chosen_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (rater_id, item_id) DO UPDATE SET explanation_id = excluded.explanation_id, "
            "chosen_at = excluded.chosen_at WHERE best_choices.explanation_id IS NOT excluded.explanation_id",
            (rater_id, item_id, best_explanation_id, now))
        return conn.total_changes != before


# --------------------------------------------------------------------------------------------------- sessions
SESSION_MAX_AGE_S = 7 * 24 * 3600
ANONYMOUS_MAX_AGE_S = 24 * 3600


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(conn: sqlite3.Connection, rater_id: int | None = None, *, replace: str | None = None) -> tuple[str, str]:
    """Create a session (optionally bound to a rater, replacing the cookie token ``replace``): (token, csrf).
    Only the token's sha256 is stored. Expired sessions are purged on the way."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.time()
    with transaction(conn):
        if replace:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(replace),))
        conn.execute("DELETE FROM sessions WHERE created_at < ? OR (rater_id IS NULL AND created_at < ?)",
                     (now - SESSION_MAX_AGE_S, now - ANONYMOUS_MAX_AGE_S))
        conn.execute("INSERT INTO sessions (token_hash, rater_id, csrf, created_at) VALUES (?, ?, ?, ?)",
                     (_token_hash(token), rater_id, csrf, now))
    return token, csrf


def load_session(conn: sqlite3.Connection, token: str | None) -> sqlite3.Row | None:
    if not token or len(token) > 128:
        return None
    row = conn.execute("SELECT * FROM sessions WHERE token_hash = ?", (_token_hash(token),)).fetchone()
    if row is None:
        return None
    limit = SESSION_MAX_AGE_S if row["rater_id"] is not None else ANONYMOUS_MAX_AGE_S
    return row if row["created_at"] >= time.time() - limit else None


def end_session(conn: sqlite3.Connection, token: str | None) -> None:
    if token:
        with transaction(conn):
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))


# --------------------------------------------------------------------------------------------------- export
EXPORT_COLUMNS = ["study", "explainer", "rater", "layer", "neuron", "item_id", "explanation_id", "format", "sample",
                  "explanation", "position", "score", "best", "rated_at", "chosen_at"]


def export_rows(db_path) -> list[dict]:
    """One row per stored rating, with the hidden format label joined and ``best`` = chosen as best."""
    conn = connect(db_path)
    try:
        study = conn.execute("SELECT name, explainer FROM studies WHERE id = 1").fetchone()
        orders = {}
        for r in conn.execute("SELECT rater_id, item_id, explanation_order FROM assignments"):
            for pos, eid in enumerate(json.loads(r["explanation_order"]), start=1):
                orders[(r["rater_id"], eid)] = pos
        rows = conn.execute(
            "SELECT ra.name AS rater, ra.id AS rater_id, i.layer, i.neuron, i.id AS item_id, e.id AS explanation_id, "
            "e.format, e.sample, e.text AS explanation, r.score, r.rated_at, b.explanation_id AS best_id, b.chosen_at "
            "FROM ratings r JOIN raters ra ON ra.id = r.rater_id JOIN explanations e ON e.id = r.explanation_id "
            "JOIN items i ON i.id = e.item_id "
            "LEFT JOIN best_choices b ON b.rater_id = r.rater_id AND b.item_id = e.item_id "
            "ORDER BY ra.name_key, i.layer, i.neuron, e.id").fetchall()
    finally:
        conn.close()
    return [{"study": study["name"], "explainer": study["explainer"], "rater": r["rater"], "layer": r["layer"],
             "neuron": r["neuron"], "item_id": r["item_id"], "explanation_id": r["explanation_id"],
             "format": r["format"], "sample": r["sample"], "explanation": r["explanation"],
             "position": orders.get((r["rater_id"], r["explanation_id"])), "score": r["score"],
             "best": r["best_id"] == r["explanation_id"], "rated_at": r["rated_at"], "chosen_at": r["chosen_at"]}
            for r in rows]


def export_ratings(db, out_path) -> int:
    """Write the ratings with their hidden format labels (for analysis only) to ``.parquet`` or ``.csv``.
    Returns the number of rows."""
    from autointerp.common.io import atomic_path

    rows = export_rows(db)
    out_path = Path(out_path)
    if out_path.suffix == ".parquet":
        import pyarrow as pa

        from autointerp.common.io import atomic_write_parquet

        schema = pa.schema([("study", pa.string()), ("explainer", pa.string()), ("rater", pa.string()),
                            ("layer", pa.int32()), ("neuron", pa.int32()), ("item_id", pa.int64()),
                            ("explanation_id", pa.int64()), ("format", pa.string()), ("sample", pa.int32()),
                            ("explanation", pa.string()), ("position", pa.int32()), ("score", pa.int8()),
                            ("best", pa.bool_()), ("rated_at", pa.string()), ("chosen_at", pa.string())])
        atomic_write_parquet(pa.Table.from_pylist(rows, schema=schema), out_path)
    elif out_path.suffix == ".csv":
        with atomic_path(out_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "best": int(row["best"])})
    else:
        raise StudyError(f"{out_path}: export to .csv or .parquet")
    return len(rows)


# --------------------------------------------------------------------------------------------------- Table 5
TABLE5_COLUMNS = ["explainer", "format", "n_ratings", "mean", "sem", "n_best", "n_choices", "pct_best", "n_items",
                  "n_raters", "n_studies"]


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _read_export(path: Path) -> list[dict]:
    if _is_sqlite(path):
        return export_rows(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["score"] = int(row["score"])
        row["best"] = str(row["best"]).strip().lower() in ("1", "true")
    return rows


def table5(inputs: Sequence, out_csv=None) -> list[dict]:
    """Table 5 of Lee et al. 2023: per (explainer, format), the mean rating ± SEM over all individual ratings
    (ddof=1) and the % of best choices it received.

    ``inputs``: study databases and/or files written by :func:`export_ratings` (several studies pool). A best
    choice is one (study, rater, item); ``pct_best`` = 100 × chosen / all choices of that explainer.
    """
    by: dict[tuple[str, str], dict] = {}
    format_order: dict[str, list[str]] = defaultdict(list)
    choices: dict[str, set] = defaultdict(set)
    for path in inputs:
        for row in _read_export(Path(path)):
            explainer, fmt = str(row["explainer"]), str(row["format"])
            if fmt not in format_order[explainer]:
                format_order[explainer].append(fmt)
            cell = by.setdefault((explainer, fmt), {"scores": [], "best": 0, "items": set(), "raters": set(),
                                                    "studies": set()})
            unit = (str(row["study"]), str(row["rater"]), int(row["layer"]), int(row["neuron"]))
            cell["scores"].append(int(row["score"]))
            cell["best"] += bool(row["best"])
            cell["items"].add((str(row["study"]), int(row["layer"]), int(row["neuron"])))
            cell["raters"].add((str(row["study"]), str(row["rater"])))
            cell["studies"].add(str(row["study"]))
            choices[explainer].add(unit)
    out = []
    for explainer in sorted(format_order):
        n_choices = len(choices[explainer])
        for fmt in format_order[explainer]:
            cell = by[(explainer, fmt)]
            stats = mean_sem(cell["scores"])
            mean, sem = stats["mean"], stats["sem"]
            out.append({"explainer": explainer, "format": fmt, "n_ratings": len(cell["scores"]), "mean": mean,
                        "sem": sem, "n_best": cell["best"], "n_choices": n_choices,
                        "pct_best": 100.0 * cell["best"] / n_choices if n_choices else math.nan,
                        "n_items": len(cell["items"]), "n_raters": len(cell["raters"]),
                        "n_studies": len(cell["studies"])})
    if out_csv is not None:
        write_csv(out, out_csv, TABLE5_COLUMNS)
    return out


def progress(db_path) -> list[dict]:
    """Per rater: name, items done, items assigned."""
    conn = connect(db_path)
    try:
        rows = conn.execute(
            "SELECT r.name, COUNT(a.item_id) AS assigned, COUNT(b.id) AS done FROM raters r "
            "JOIN assignments a ON a.rater_id = r.id "
            "LEFT JOIN best_choices b ON b.rater_id = r.id AND b.item_id = a.item_id "
            "GROUP BY r.id ORDER BY r.name_key").fetchall()
    finally:
        conn.close()
    return [{"rater": r["name"], "done": r["done"], "assigned": r["assigned"]} for r in rows]
