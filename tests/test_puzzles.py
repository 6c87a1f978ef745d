"""Neuron Puzzles: official-file loader, pinned download, rule-defined puzzle generator."""

import hashlib
import json
import logging
import re
import urllib.error
from collections import Counter
from pathlib import Path

import pytest

from autointerp.similarity import puzzles as pz
from autointerp.common.records import ActivationRecord

SHARED_PUZZLES = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "puzzles.json"
needs_shared = pytest.mark.skipif(not SHARED_PUZZLES.is_file(), reason="shared reference data not present")


# ------------------------------------------------------------------------------- official file

@needs_shared
def test_official_file_loads_with_known_contents():
    puzzles = pz.load_puzzles(SHARED_PUZZLES)
    by_name = {p.name: p for p in puzzles}
    assert len(puzzles) == 19
    assert sum(len(p.records) for p in puzzles) == 182
    assert [p.name for p in puzzles][:3] == ["colors", "char2", "similes"]  # JSON order kept
    assert max(a for r in by_name["feet"].records for a in r.activations) == 9
    first = by_name["colors"].records[0]
    assert (first.tokens[0], first.activations[0]) == ("Green", 9.0)
    assert (first.tokens[1], first.activations[1]) == (" smoke", 0.0)
    assert all(isinstance(a, float) for p in puzzles for r in p.records for a in r.activations)
    counts = Counter(a for p in puzzles for r in p.records for a in r.activations if a)
    assert counts == {10: 157, 9: 100, 8: 49, 7: 12, 6: 1, 2: 1, 1: 1}  # explainer_anchors §6.2
    assert all(3 <= len(p.false_explanations) <= 4 for p in puzzles)


@needs_shared
def test_pinned_sha256_is_the_shared_file_and_of_rule_reproduces_official_of_puzzle():
    data = SHARED_PUZZLES.read_bytes()
    assert hashlib.sha256(data).hexdigest() == pz.OFFICIAL_SHA256
    git_blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert git_blob.startswith("2049a6ec")  # the blob named in explainer_anchors §6.1
    of = next(p for p in pz.load_puzzles(SHARED_PUZZLES) if p.name == "of")
    assert [pz.RULES["of"].activations(r.tokens) for r in of.records] == [r.activations for r in of.records]


def _write(tmp_path, obj, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_loader_item_forms(tmp_path):
    obj = {"b": {"name": "b", "explanation": "x", "sentences": [["A", [" b", 7], [" c", 2.5]]],
                 "false_explanations": ["y"]},
           "a": {"name": "a", "explanation": "z", "sentences": [[" only"], [[" on", 10]]]}}
    b, a = pz.load_puzzles(_write(tmp_path, obj))
    assert (b.name, a.name) == ("b", "a")
    assert b.records[0] == ActivationRecord(["A", " b", " c"], [0.0, 7.0, 2.5])
    assert [type(x) for x in b.records[0].activations] == [float] * 3
    assert a.records[1].activations == [10.0] and a.false_explanations == []
    assert b.source == str(tmp_path / "p.json")


@pytest.mark.parametrize("item, fragment", [
    ([" b"], "sentence 1 item 2"), ([" b", 1, 2], "sentence 1 item 2"), ([" b", "9"], "sentence 1 item 2"),
    ([3, 9], "sentence 1 item 2"), (5, "sentence 1 item 2"), ([" b", True], "sentence 1 item 2")])
def test_loader_malformed_item_names_puzzle_and_sentence(tmp_path, item, fragment):
    obj = {"bad": {"name": "bad", "explanation": "x", "sentences": [["ok"], ["A", " x", item]]}}
    with pytest.raises(pz.PuzzleError, match=rf"puzzle 'bad' {fragment}"):
        pz.load_puzzles(_write(tmp_path, obj))


def test_loader_structural_errors(tmp_path):
    with pytest.raises(pz.PuzzleError, match="missing field"):
        pz.load_puzzles(_write(tmp_path, {"q": {"name": "q", "explanation": "x"}}))
    with pytest.raises(pz.PuzzleError, match="sentence 0"):
        pz.load_puzzles(_write(tmp_path, {"q": {"name": "q", "explanation": "x", "sentences": ["tok"]}}))
    with pytest.raises(pz.PuzzleError, match="different 'name'"):
        pz.load_puzzles(_write(tmp_path, {"q": {"name": "r", "explanation": "x", "sentences": [["a"]]}}))


# ---------------------------------------------------------------------------------- fetching

TINY = json.dumps({"t": {"name": "t", "explanation": "e", "sentences": [["a", [" b", 1]]],
                         "false_explanations": []}}).encode()


@pytest.fixture
def tiny_pin(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pz, "OFFICIAL_SHA256", hashlib.sha256(TINY).hexdigest())
    calls = []

    def fake_download(url, timeout):
        calls.append(url)
        return TINY

    monkeypatch.setattr(pz, "_download", fake_download)
    return calls


def test_fetch_verifies_caches_and_reuses(tmp_path, tiny_pin, monkeypatch):
    path = pz.fetch_official_puzzles(tmp_path / "cache")
    assert path.read_bytes() == TINY and tiny_pin == [pz.OFFICIAL_URL]
    assert pz.OFFICIAL_COMMIT in pz.OFFICIAL_URL and pz.OFFICIAL_URL.startswith("https://raw.githubusercontent.com/")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a verified cache is used even offline, without downloading
    assert pz.fetch_official_puzzles(tmp_path / "cache") == path and len(tiny_pin) == 1
    assert pz.load_puzzles(path)[0].records[0].activations == [0.0, 1.0]


def test_fetch_checksum_mismatch_caches_nothing(tmp_path, tiny_pin, monkeypatch):
    monkeypatch.setattr(pz, "_download", lambda url, timeout: TINY + b" ")
    with pytest.raises(pz.PuzzleChecksumError, match="sha256 mismatch.*local path"):
        pz.fetch_official_puzzles(tmp_path)
    assert not (tmp_path / pz.OFFICIAL_FILENAME).exists()
    (tmp_path / pz.OFFICIAL_FILENAME).write_bytes(b"tampered")  # a bad cache is replaced, not trusted
    monkeypatch.setattr(pz, "_download", lambda url, timeout: TINY)
    assert pz.fetch_official_puzzles(tmp_path).read_bytes() == TINY


def test_fetch_offline_and_network_errors(tmp_path, monkeypatch):
    def no_network(url, timeout):
        raise urllib.error.URLError("no route")

    monkeypatch.setattr(pz, "_download", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pz.PuzzleFetchError, match="HF_HUB_OFFLINE.*load_puzzles\\(path\\)"):
        pz.fetch_official_puzzles(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(pz.PuzzleFetchError, match="no route.*local path"):
        pz.fetch_official_puzzles(tmp_path)


# ------------------------------------------------------------------------------------- rules

def test_rule_examples_from_brief():
    assert pz.RULES["colors"].activations([" The", " sky", " is", " blue", "."]) == [0, 0, 0, 10, 0]
    assert pz.RULES["million"].activations([" 2", ",", "000", ",", "000", " people"]) == [10] * 5 + [0]
    assert pz.RULES["million"].activations([" 1", ",", "000", ",", "000", " people"]) == [0] * 6
    assert pz.RULES["of"].activations([" cup", " of", " cof", "fee"]) == [0, 0, 10, 0]


def fake_tokenize(text):
    """Subword-ish tokenizer: whitespace attaches to the next token, punctuation is its own token, words and
    digit runs longer than 4 characters are cut into 3-character pieces (' turquoise' -> ' tur','quo','ise')."""
    tokens = []
    for m in re.finditer(r"(\s*)(\w+|[^\w\s])", text):
        piece = m.group(2)
        chunks = [piece[i:i + 3] for i in range(0, len(piece), 3)] if len(piece) > 4 else [piece]
        chunks[0] = m.group(1) + chunks[0]
        tokens += chunks
    assert "".join(tokens) == text.rstrip()
    return tokens


def annotated(text):
    """Parse hand annotations: '[words]' -> every token of them fires 10, '[words|8]' -> 8, '<word>' -> only its
    first token fires 10. Returns (tokens, expected activations) computed without any rule code."""
    clean, marks, i = "", [], 0
    for m in re.finditer(r"\[([^\]|]*)(?:\|(\d+))?\]|<([^>]*)>", text):
        clean += text[i:m.start()]
        body = m.group(1) if m.group(1) is not None else m.group(3)
        marks.append((len(clean), len(clean) + len(body), int(m.group(2) or 10), m.group(3) is not None))
        clean += body
        i = m.end()
    clean += text[i:]
    tokens = fake_tokenize(clean)
    expected, pos = [], 0
    for tok in tokens:
        chars = {p for p in range(pos, pos + len(tok)) if not clean[p].isspace()}
        expected.append(float(max([v for s, e, v, first in marks if not first and chars & set(range(s, e))]
                                  + [0])))
        pos += len(tok)
    for s, e, v, first in marks:
        if first:
            pos = 0
            for k, tok in enumerate(tokens):
                if {p for p in range(pos, pos + len(tok)) if not clean[p].isspace()} & set(range(s, e)):
                    expected[k] = float(v)
                    break
                pos += len(tok)
    return tokens, expected


CASES = {
    "colors": ["The sky is [blue] today.", "She wore a [crimson|8] dress and [white] shoes.",
               "[Red], [yellow] and [turquoise|8] flags waved.", "A [blue]-[green] sea of [GREY] ash.",
               "Bluebird songs filled the morning.", "The reddish glow faded.", "He credited the team."],
    "million": ["The city has [2,000,000] residents.", "Revenue reached $[3,500,000] last year.",
                "About [1.5 million] people attended.", "The fund holds [2 billion] dollars.",
                "The number [1000001] is odd.", "Exactly 1,000,000 tickets were sold.",
                "We had 1 million fans.", "It cost 999,999 dollars.", "In 2023 they sold 500 units.",
                "The loss was -5,000,000 today."],
    "of": ["Most of <the> students stayed.", "A cup of <coffee> helps.", "Of <course> we left.",
           "Think of <\">roses\" now.", "Often the offer was fine.", "He left early."],
    "quotes": ['She said "[hello there]" and left.', 'He shouted "[Stop, now!]" loudly.',
               "The sign read \u201c[Closed]\u201d today.", 'Two: "[a]" and "[b]".', 'He wrote "[hi] " twice.',
               "No quotes here.", 'An unmatched " quote stays dark.', "It's a 'single' quote."],
    "plurals": ["She owns 3 [cats].", "We waited twenty [minutes].", "About 1,000 [visitors] came.",
                "Then twenty-five [years] passed.", "He has 2 [dogs] and Three [birds].",
                "About 1,000 people came.", "The 3 is odd.", "In 1990 was a year.", "I saw 2 big dogs.",
                "Page 2 analysis follows."],
    "calendar": ["We met on [Monday] in [March].", "Her birthday is [May] 5.", "It was 5 [May] then.",
                 "[Sundays] are quiet.", "You may go now.", "May I help you?", "The dog days of august.",
                 "Soldiers march forward."],
    "first_person": ["[I] think [my] dog likes [me].", "They told [us|8] that [we|8] won.",
                     "[Our|8] house is [mine], [I] said.", "The US economy grew.", "They left.",
                     "Ice melts in summer."],
    "negation": ["She did [not] go.", "I [don't] know.", "[Nobody] came and [nothing] happened.",
                 "[Never] say [never].", "He [can't] and [won't].", "Knot tying is fun.",
                 "Notable events occurred.", "Another day begins."],
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_matches_hand_annotations(rule):
    for text in CASES[rule]:
        tokens, expected = annotated(text)
        assert pz.RULES[rule].activations(tokens) == expected, text


def test_every_builtin_rule_is_covered():
    assert set(CASES) == set(pz.RULES)
    assert all(any("[" in t or "<" in t for t in CASES[r]) and any("[" not in t and "<" not in t for t in CASES[r])
               for r in CASES)


# --------------------------------------------------------------------------------- generator

@pytest.mark.parametrize("rule", sorted(CASES))
def test_generated_puzzle_follows_rule_exactly(rule):
    parsed = [annotated(t) for t in CASES[rule]]
    [puzzle] = pz.generate_puzzles([t for t, _ in parsed], rules=[rule], min_active=2)
    assert puzzle.name == rule and puzzle.explanation == pz.RULES[rule].explanation
    assert len(puzzle.false_explanations) == 3 and puzzle.explanation not in puzzle.false_explanations
    for rec in puzzle.records:
        tokens, expected = parsed[rec.excerpt_id]
        assert rec.tokens == tokens and rec.activations == expected
    n_marked = sum(any(e) for _, e in parsed)
    assert sum(any(r.activations) for r in puzzle.records) == min(7, n_marked)


def _corpus(n_active, n_inactive):
    act = [fake_tokenize(f"Car {i} was painted {c} on a sunny day.") for i, c in
           zip(range(n_active), ["red", "blue", "green", "black", "white", "pink", "brown"] * 20)]
    return act + [fake_tokenize(f"Car {i} was parked on a sunny day.") for i in range(n_inactive)]


def test_mix_is_seventy_thirty_and_seeded():
    excerpts = _corpus(20, 15)
    [p] = pz.generate_puzzles(excerpts, rules=["colors"], seed=3)
    flags = [any(r.activations) for r in p.records]
    assert (len(flags), sum(flags)) == (10, 7)
    assert all(any(r.activations) == (r.excerpt_id < 20) for r in p.records)
    assert len({r.excerpt_id for r in p.records}) == 10
    again = pz.generate_puzzles(excerpts, rules=["colors"], seed=3)[0]
    assert [(r.excerpt_id, r.tokens, r.activations) for r in again.records] == \
           [(r.excerpt_id, r.tokens, r.activations) for r in p.records]
    assert again.false_explanations == p.false_explanations
    others = {tuple(r.excerpt_id for r in pz.generate_puzzles(excerpts, rules=["colors"], seed=s)[0].records)
              for s in range(5)}
    assert len(others) > 1
    orders = [[any(r.activations) for r in pz.generate_puzzles(excerpts, rules=["colors"], seed=s)[0].records]
              for s in range(5)]
    assert any(o != sorted(o, reverse=True) for o in orders)  # silent sentences are shuffled in, not appended
    [q] = pz.generate_puzzles(excerpts, rules=["colors"], sentences_per_puzzle=6, active_fraction=0.5)
    assert sum(any(r.activations) for r in q.records) == 3 and len(q.records) == 6


def test_short_supply_and_min_active_skip(caplog):
    [p] = pz.generate_puzzles(_corpus(4, 1), rules=["colors"])
    assert (len(p.records), sum(any(r.activations) for r in p.records)) == (5, 4)
    with caplog.at_level(logging.INFO, logger="autointerp.similarity.puzzles"):
        assert pz.generate_puzzles(_corpus(2, 10), rules=["colors"], min_active=3) == []
    assert "'colors' skipped: 2 of 12" in caplog.text
    assert [p.name for p in pz.generate_puzzles(_corpus(3, 10), min_active=3)] == ["colors"]
    with pytest.raises(pz.PuzzleError, match="unknown puzzle rule 'nope'"):
        pz.generate_puzzles(_corpus(3, 3), rules=["nope"])


def test_max_tokens_window_recomputes_on_trimmed_text():
    filler = "The road was long and quiet. " * 6
    tokens = fake_tokenize(filler + "She saw a blue car. Then rain fell on the long road again and again.")
    [p] = pz.generate_puzzles([tokens] * 3, rules=["colors"], max_tokens=12)
    for rec in p.records:
        assert rec.tokens == [" She", " saw", " a", " blue", " car", "."]
        assert rec.activations == pz.RULES["colors"].activations(rec.tokens) and max(rec.activations) == 10


def test_json_round_trip(tmp_path):
    puzzles = pz.generate_puzzles([annotated(t)[0] for r in CASES for t in CASES[r]], min_active=2, seed=1)
    puzzles.append(pz.Puzzle("graded", "x", [ActivationRecord(["a", " b\n", '"'], [0.0, 2.5, 9.0])], ["y"]))
    path = tmp_path / "gen.json"
    text = pz.puzzles_to_json(puzzles, path)
    assert path.read_text(encoding="utf-8") == text
    raw = json.loads(text)
    assert raw["graded"]["sentences"] == [["a", [" b\n", 2.5], ['"', 9]]]
    assert set(raw["colors"]) == {"name", "explanation", "sentences", "false_explanations"}
    back = pz.load_puzzles(path)
    assert [(p.name, p.explanation, p.false_explanations, p.records) for p in back] == \
           [(p.name, p.explanation, p.false_explanations, p.records) for p in puzzles]
    assert len(back) == len(pz.RULES) + 1
    with pytest.raises(pz.PuzzleError, match="duplicate"):
        pz.puzzles_to_json(puzzles + puzzles[:1])


@needs_shared
def test_official_file_round_trips_through_writer(tmp_path):
    official = pz.load_puzzles(SHARED_PUZZLES)
    pz.puzzles_to_json(official, tmp_path / "o.json")
    back = pz.load_puzzles(tmp_path / "o.json")
    assert json.loads((tmp_path / "o.json").read_text(encoding="utf-8")) == json.loads(SHARED_PUZZLES.read_text())
    assert [p.records for p in back] == [p.records for p in official]
