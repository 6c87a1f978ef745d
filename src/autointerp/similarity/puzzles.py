"""Neuron Puzzles: hand-made "neurons" whose true explanation is known (explainer_anchors §6).

Two sources of puzzles, one data type (``Puzzle``):

* **Official puzzles** (OpenAI ``neuron_explainer/explanations/puzzles.json``, 19 puzzles, 182 sentences),
  read by ``load_puzzles`` or downloaded once by ``fetch_official_puzzles`` at a pinned commit and SHA-256.
* **Generated puzzles**: ``generate_puzzles`` runs rule-defined neurons (``RULES``) over real corpus excerpts,
  so explainer prompts can be checked against ground truth on the subject model's own tokenisation, in any
  number, without hand labelling. ``puzzles_to_json`` writes them in the official format.

File format (same as the official file): ``{name: {"name", "explanation", "sentences", "false_explanations"}}``;
a sentence is a list of items, each a plain token string (activation 0) or ``[token, activation]``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from autointerp.common.records import ActivationRecord
from autointerp.common.io import atomic_write_text

log = logging.getLogger("autointerp.similarity.puzzles")


class PuzzleError(ValueError):
    """Malformed puzzle data or bad generator arguments; the message names the puzzle and what to fix."""


class PuzzleChecksumError(PuzzleError):
    """Downloaded bytes do not match the pinned SHA-256 (nothing is cached)."""


class PuzzleFetchError(PuzzleError):
    """The official file could not be downloaded (offline, network error)."""


@dataclass
class Puzzle:
    """One puzzle. ``source`` says where it came from (file path, URL or generator settings); it is not saved
    in the JSON format, which has no such field."""

    name: str
    explanation: str
    records: list[ActivationRecord]
    false_explanations: list[str] = field(default_factory=list)
    source: str = ""


# --------------------------------------------------------------------------------------------- loading

def _parse_item(item, where: str) -> tuple[str, float]:
    if isinstance(item, str):
        return item, 0.0
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
        act = item[1]
        if isinstance(act, (int, float)) and not isinstance(act, bool) and math.isfinite(act):
            return item[0], float(act)
    raise PuzzleError(
        f"{where}: expected a token string or a [token, activation] pair with a finite number, got {item!r}"
    )


def parse_puzzles(data, source: str = "<memory>") -> list[Puzzle]:
    """Parse an already-decoded puzzles.json object; JSON (insertion) order is kept, as the reference's
    ``PUZZLES_BY_NAME`` does and as SEED's ``"{k}:seed{s}"`` ids (1-based JSON index) rely on."""
    if not isinstance(data, dict):
        raise PuzzleError(f"{source}: expected a JSON object mapping puzzle name -> puzzle, got {type(data).__name__}")
    puzzles = []
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise PuzzleError(f"{source}: puzzle {key!r}: expected an object, got {type(entry).__name__}")
        missing = [k for k in ("explanation", "sentences") if k not in entry]
        if missing:
            raise PuzzleError(f"{source}: puzzle {key!r}: missing field(s) {', '.join(missing)}")
        name = entry.get("name", key)
        if name != key:
            raise PuzzleError(f"{source}: puzzle {key!r} has a different 'name' field {name!r}")
        explanation = entry["explanation"]
        false_explanations = entry.get("false_explanations", [])
        if not isinstance(explanation, str):
            raise PuzzleError(f"{source}: puzzle {name!r}: 'explanation' must be a string")
        if not (isinstance(false_explanations, list) and all(isinstance(x, str) for x in false_explanations)):
            raise PuzzleError(f"{source}: puzzle {name!r}: 'false_explanations' must be a list of strings")
        sentences = entry["sentences"]
        if not isinstance(sentences, list) or not sentences:
            raise PuzzleError(f"{source}: puzzle {name!r}: 'sentences' must be a non-empty list")
        records = []
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, list) or not sentence:
                raise PuzzleError(f"{source}: puzzle {name!r} sentence {i}: expected a non-empty list of items")
            pairs = [_parse_item(it, f"{source}: puzzle {name!r} sentence {i} item {j}")
                     for j, it in enumerate(sentence)]
            records.append(ActivationRecord([t for t, _ in pairs], [a for _, a in pairs], excerpt_id=i))
        puzzles.append(Puzzle(name, explanation, records, list(false_explanations), source))
    return puzzles


def load_puzzles(path) -> list[Puzzle]:
    """Read a puzzles.json file (official or written by ``puzzles_to_json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PuzzleError(f"{path}: not valid JSON: {exc}") from exc
    return parse_puzzles(data, str(path))


def _json_number(x: float):
    return int(x) if float(x).is_integer() else float(x)


def puzzles_to_json(puzzles: Iterable[Puzzle], path=None) -> str:
    """Serialise to the official format (zero activations as plain strings, integral values as ints, one
    sentence per line like the official file); also write it atomically to ``path`` if given."""
    out, seen = [], set()
    for p in puzzles:
        if p.name in seen:
            raise PuzzleError(f"duplicate puzzle name {p.name!r}: names are the JSON keys and must be unique")
        seen.add(p.name)
        sentences = ",\n".join(
            " " * 12 + json.dumps([t if a == 0 else [t, _json_number(a)] for t, a in zip(r.tokens, r.activations)],
                                  ensure_ascii=False)
            for r in p.records)
        out.append(
            f"    {json.dumps(p.name, ensure_ascii=False)}: {{\n"
            f"        \"name\": {json.dumps(p.name, ensure_ascii=False)},\n"
            f"        \"explanation\": {json.dumps(p.explanation, ensure_ascii=False)},\n"
            f"        \"sentences\": [\n{sentences}\n        ],\n"
            f"        \"false_explanations\": {json.dumps(list(p.false_explanations), ensure_ascii=False)}\n"
            f"    }}")
    text = "{\n" + ",\n".join(out) + "\n}\n"
    if path is not None:
        atomic_write_text(path, text)
    return text


# ------------------------------------------------------------------------------------ official file

OFFICIAL_REPO = "openai/automated-interpretability"
# OAI HEAD studied in explainer_anchors §0. The file is one git blob (2049a6ec...) at this commit, at OAI's
# initial commit, in SEED and in JL (§6.1), so pinning any of them gives the same bytes.
OFFICIAL_COMMIT = "e4aa21bc8baf26ff141ccf2e6f4444dcf120193f"
OFFICIAL_PATH = "neuron-explainer/neuron_explainer/explanations/puzzles.json"
OFFICIAL_URL = f"https://raw.githubusercontent.com/{OFFICIAL_REPO}/{OFFICIAL_COMMIT}/{OFFICIAL_PATH}"
OFFICIAL_SHA256 = "4236e8a4207886b6053376a261ac909e7ccb8fa1d8aeaf699521c7f42253af07"  # 52,696 bytes
OFFICIAL_FILENAME = "puzzles.json"


def _download(url: str, timeout: float) -> bytes:
    """The only network access of this module (tests replace it)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URL
        return resp.read()


def fetch_official_puzzles(cache_dir, *, timeout: float = 30.0) -> Path:
    """Return the path of the official puzzles.json in ``cache_dir``, downloading it once if needed
    (autointerp.common.pinned: checked against ``OFFICIAL_SHA256`` before it is cached and whenever it is reused)."""
    from autointerp.common.pinned import fetch_pinned

    target = Path(cache_dir) / OFFICIAL_FILENAME
    hint = (f"Download {OFFICIAL_URL} yourself (or copy the file from a checkout of {OFFICIAL_REPO}) and pass its "
            f"local path to load_puzzles(path), or place it at {target}.")
    return fetch_pinned(OFFICIAL_URL, OFFICIAL_SHA256, target, hint=hint, download=_download,
                        fetch_error=PuzzleFetchError, checksum_error=PuzzleChecksumError,
                        what="the official puzzles file", timeout=timeout)


# ------------------------------------------------------------------------------------------- rules
#
# Rules work on the excerpt's text (the tokens joined), so they do not care how a word is split into
# tokens: a rule yields character spans with an activation, and a token takes the highest activation
# of any span that covers one of its NON-WHITESPACE characters. Hence every token of a matched word
# fires (" tur", "quoise" both 10), a leading space never makes a token fire, and a token that is only
# punctuation fires only if the span covers that punctuation.

Span = tuple[int, int, int]  # (start, end, activation) over the joined text


@dataclass(frozen=True)
class Rule:
    """A synthetic neuron. ``definition`` is the exact, documented firing rule; ``explanation`` is the
    ground truth phrased like the official puzzles'."""

    name: str
    explanation: str
    definition: str
    spans: Callable[[str], Iterable[Span]]

    def activations(self, tokens: Sequence[str]) -> list[float]:
        text = "".join(tokens)
        level = [0] * len(text)
        for start, end, act in self.spans(text):
            for p in range(max(start, 0), min(end, len(text))):
                level[p] = max(level[p], act)
        acts, pos = [], 0
        for tok in tokens:
            acts.append(float(max((level[p] for p in range(pos, pos + len(tok)) if not text[p].isspace()),
                                  default=0)))
            pos += len(tok)
        return acts


def _words(words: Iterable[str]) -> str:
    return "|".join(sorted(words, key=len, reverse=True))


BASIC_COLORS = ("black", "white", "red", "green", "yellow", "blue", "brown", "orange", "pink", "purple",
                "gray", "grey")
OTHER_COLORS = ("violet", "indigo", "turquoise", "crimson", "scarlet", "maroon", "beige", "magenta", "cyan",
                "teal", "lavender", "azure", "khaki")
_COLOR_RE = re.compile(rf"\b(?:{_words(BASIC_COLORS + OTHER_COLORS)})\b", re.I)


def _color_spans(text):
    for m in _COLOR_RE.finditer(text):
        yield m.start(), m.end(), 10 if m.group().lower() in BASIC_COLORS else 8


_SCALES = {"million": 1e6, "billion": 1e9, "trillion": 1e12}
_MILLION_RE = re.compile(
    r"(?<![\w.,\-])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?!\w|[.,]\d)(?:\s+(million|billion|trillion)\b)?", re.I)


def _million_spans(text):
    for m in _MILLION_RE.finditer(text):
        value = float(m.group(1).replace(",", "") + (m.group(2) or ""))
        if m.group(3):
            value *= _SCALES[m.group(3).lower()]
        if value > 1e6:
            yield m.start(), m.end(), 10


_OF_RE = re.compile(r"\bof\b", re.I)
_NONSPACE_RE = re.compile(r"\S")


def _of_spans(text):
    for m in _OF_RE.finditer(text):
        nxt = _NONSPACE_RE.search(text, m.end())
        if nxt:
            yield nxt.start(), nxt.start() + 1, 10


_QUOTE_RES = (re.compile(r'"([^"]*)"'), re.compile(r"\u201c([^\u201c\u201d]*)\u201d"))


def _quote_spans(text):
    for rx in _QUOTE_RES:
        for m in rx.finditer(text):
            yield m.start(1), m.end(1), 10


_UNITS = ("one two three four five six seven eight nine").split()
_NUMBER_WORDS = (_UNITS[1:] + "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen "
                 "hundred thousand million billion trillion dozen".split())
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_RE = (rf"(?:(?<![\w.])\d+(?:,\d{{3}})*(?:\.\d+)?"
              rf"|\b(?:(?:{_words(_TENS)})(?:-(?:{_words(_UNITS)}))?|{_words(_NUMBER_WORDS)})\b)")
_PLURAL_AFTER_NUMBER_RE = re.compile(rf"{_NUMBER_RE}\s+([A-Za-z]+s)\b", re.I)
_NOT_PLURAL = frozenset("is was has does goes its his this thus yes plus minus less always perhaps unless whereas "
                        "besides across as us".split())


def _plural_spans(text):
    for m in _PLURAL_AFTER_NUMBER_RE.finditer(text):
        word = m.group(1).lower()
        if len(word) >= 3 and not word.endswith(("ss", "us", "is")) and word not in _NOT_PLURAL:
            yield m.start(1), m.end(1), 10


_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_MONTHS = "January February March April June July August September October November December".split()
_CALENDAR_RE = re.compile(rf"\b(?:(?:{_words(_DAYS)})s?|{_words(_MONTHS)}|May(?=\s+\d)|(?<=\d\s)May)\b")


def _calendar_spans(text):
    for m in _CALENDAR_RE.finditer(text):
        yield m.start(), m.end(), 10


_FIRST_SINGULAR = ("me", "my", "mine", "myself")
_FIRST_PLURAL = ("we", "us", "our", "ours", "ourselves")
_FIRST_PERSON_RE = re.compile(
    r"\b(?:I|" + "|".join(f"[{w[0].upper()}{w[0]}]{w[1:]}" for w in _FIRST_SINGULAR + _FIRST_PLURAL) + r")\b")


def _first_person_spans(text):
    for m in _FIRST_PERSON_RE.finditer(text):
        yield m.start(), m.end(), 8 if m.group().lower() in _FIRST_PLURAL else 10


_NEGATION_WORDS = "not no never nothing nobody none neither nor nowhere cannot".split()
_NEGATION_RE = re.compile(rf"\b(?:{_words(_NEGATION_WORDS)})\b|\b[A-Za-z]+n['\u2019]t\b", re.I)


def _negation_spans(text):
    for m in _NEGATION_RE.finditer(text):
        yield m.start(), m.end(), 10


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("colors", "words related to colors and nothing else",
         "Whole words (case-insensitive, regex word boundaries) in a fixed list: basic colour terms "
         f"{', '.join(BASIC_COLORS)} -> 10; other colour names {', '.join(OTHER_COLORS)} -> 8. Only these exact "
         "forms ('reddish', 'blues', 'Greenfield' do not fire; 'blue-green' fires on both parts). Lexical: "
         "surnames and the fruit 'orange' fire too.", _color_spans),
    Rule("million", "numbers greater than one million and nothing else",
         "A numeral written with digits (plain '2500000' or comma-grouped '2,500,000', optional decimals), "
         "optionally followed by 'million'/'billion'/'trillion', whose value is strictly greater than 1,000,000. "
         "Every token of the number fires 10: digit chunks, the grouping commas, the decimal point and the scale "
         "word. Numerals preceded by a letter, digit, '.', ',' or '-' (negative numbers, ranges) are ignored; "
         "numbers spelled out in words ('two million') do not count.", _million_spans),
    Rule("of", "positions in the passage following the word \"of\"",
         "For every whole word 'of' (case-insensitive), the token holding the next non-whitespace character "
         "fires 10: only the first token of the following word (or the punctuation that follows).", _of_spans),
    Rule("quotes", "text inside double quotation marks",
         "Straight double quotes are paired in order (1st opens, 2nd closes, ...); curly \u201c\u201d pairs "
         "likewise. A token fires 10 if one of its non-space characters lies strictly between a pair; tokens "
         "that are only a quote mark (plus spaces) do not; an unpaired quote fires nothing. Single quotes are "
         "ignored.", _quote_spans),
    Rule("plurals", "plural nouns that come right after a number",
         "A word of letters ending in 's' (length >= 3, not ending in 'ss', 'us' or 'is', and not a listed "
         "function word such as 'is', 'was', 'has', 'this', 'plus') that follows, separated only by whitespace, "
         "a numeral ('3', '1,000', '2.5') or a number word ('two'..'nineteen', 'twenty'..'ninety' with optional "
         "'-one'..'-nine', 'hundred', 'thousand', 'million', 'billion', 'trillion', 'dozen'; not 'one'). "
         "All tokens of that word fire 10. Heuristic: a verb like '3 discusses' fires, 'people' does not.",
         _plural_spans),
    Rule("calendar", "names of days of the week and months of the year",
         "Capitalised whole words Monday..Sunday (optionally plural 'Mondays') and January..December, all 10. "
         "'May' only when next to a number ('May 5', '5 May'), to avoid the modal verb; lowercase forms and "
         "abbreviations do not fire.", _calendar_spans),
    Rule("first_person", "first-person pronouns and nothing else",
         "Whole words I, me, my, mine, myself -> 10; we, us, our, ours, ourselves -> 8. 'I' must be upper case; "
         "the others lower case or capitalised (all-caps 'US' does not fire).", _first_person_spans),
    Rule("negation", "words expressing negation, such as \"not\", \"never\" and \"n't\"",
         f"Whole words (case-insensitive) {', '.join(_NEGATION_WORDS)}, and every word ending in n't / n\u2019t "
         "(don't, can't, isn't): all tokens of the word fire 10 (so ' didn' and \"'t\" both fire).",
         _negation_spans),
)}


# --------------------------------------------------------------------------------------- generator

_SENTENCE_END_RE = re.compile(r"[.!?][\"'\u201d)\]]*\s*$|\n")


def _window(tokens: list[str], center: int, max_tokens: int) -> list[str]:
    """Up to ``max_tokens`` tokens containing ``center``, starting at a sentence start and ending at a sentence
    end when possible, so trimmed excerpts read like the official puzzle sentences."""
    if len(tokens) <= max_tokens:
        return tokens
    ends = [i for i, t in enumerate(tokens) if _SENTENCE_END_RE.search(t)]  # token i ends a sentence
    starts = [0] + [i + 1 for i in ends]
    start = max((s for s in starts if center - max_tokens < s <= center), default=max(0, center - max_tokens // 2))
    stop = min(len(tokens), start + max_tokens)
    stop = max((e + 1 for e in ends if center < e + 1 <= stop), default=stop)
    return tokens[start:stop]


def _resolve_rules(rules) -> list[Rule]:
    if rules is None:
        return list(RULES.values())
    out = []
    for r in rules:
        if isinstance(r, Rule):
            out.append(r)
        elif r in RULES:
            out.append(RULES[r])
        else:
            raise PuzzleError(f"unknown puzzle rule {r!r}; known rules: {', '.join(RULES)}")
    if len({r.name for r in out}) != len(out):
        raise PuzzleError("puzzle rule names must be unique")
    return out


def generate_puzzles(excerpts: Sequence[Sequence[str]], *, rules=None, sentences_per_puzzle: int = 10,
                     min_active: int = 3, seed: int = 0, active_fraction: float = 0.7,
                     max_tokens: int | None = None) -> list[Puzzle]:
    """One puzzle per rule from real excerpts (token strings, leading spaces kept).

    Per rule: ``round(sentences_per_puzzle * active_fraction)`` excerpts where the rule fires at least once
    and the rest where it never fires (the official puzzles likewise mix in 0-8 silent sentences), drawn
    without replacement and shuffled with ``random.Random(f"{seed}:{rule.name}")``, so a rule's puzzle does
    not change when other rules are added. If too few excerpts of a kind exist the puzzle is shorter. A rule
    with fewer than ``min_active`` firing excerpts is skipped (logged). ``max_tokens`` trims each excerpt to a
    sentence-aligned window around its first firing token (activations are recomputed on the window).
    ``excerpt_id`` of each record is the excerpt's index in ``excerpts``; ``false_explanations`` are three other
    rules' explanations.
    """
    if sentences_per_puzzle < 1 or min_active < 1 or not 0.0 <= active_fraction <= 1.0:
        raise PuzzleError("need sentences_per_puzzle >= 1, min_active >= 1 and 0 <= active_fraction <= 1")
    if max_tokens is not None and max_tokens < 1:
        raise PuzzleError("max_tokens must be >= 1")
    chosen_rules = _resolve_rules(rules)
    all_explanations = {r.name: r.explanation for r in list(RULES.values()) + chosen_rules}
    n_active = round(sentences_per_puzzle * active_fraction)
    n_inactive = sentences_per_puzzle - n_active
    puzzles = []
    for rule in chosen_rules:
        active, inactive = [], []
        for idx, excerpt in enumerate(excerpts):
            tokens = list(excerpt)
            if not tokens:
                continue
            acts = rule.activations(tokens)
            if max_tokens is not None and len(tokens) > max_tokens:
                center = next((i for i, a in enumerate(acts) if a > 0), 0)
                tokens = _window(tokens, center, max_tokens)
                acts = rule.activations(tokens)
            (active if any(a > 0 for a in acts) else inactive).append(ActivationRecord(tokens, acts, excerpt_id=idx))
        if len(active) < min_active:
            log.info("puzzle rule %r skipped: %d of %d excerpts activate it, min_active=%d",
                     rule.name, len(active), len(excerpts), min_active)
            continue
        rng = random.Random(f"{seed}:{rule.name}")
        records = rng.sample(active, min(n_active, len(active))) + rng.sample(inactive, min(n_inactive, len(inactive)))
        rng.shuffle(records)
        others = sorted(n for n in all_explanations if n != rule.name)
        false = [all_explanations[n] for n in rng.sample(others, min(3, len(others)))]
        puzzles.append(Puzzle(rule.name, rule.explanation, records, false,
                              f"generated:rule={rule.name};seed={seed};excerpts={len(excerpts)}"))
    return puzzles
