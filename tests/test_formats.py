"""Explainer prompt formats: golden prompts of the reference, selection rules, context limit, variants."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from pathlib import Path

import pytest

from autointerp.common.records import ActivationRecord, NeuronId
from autointerp.prompts.formats import (
    FORMATS,
    PAPER_FORMATS,
    RENDERERS,
    TWO_K_CONTEXT,
    PromptFormat,
    SeedMutationState,
    excerpt_label,
    get_format,
    load_few_shot_set,
    prompt_hash,
    register_format,
    register_renderer,
    render,
    variant_from_config,
)
from autointerp.prompts.tokens import count_chat_tokens

REFERENCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "reference-data"
ENDING = "\nExplanation of neuron 4 behavior: the main thing this neuron does is find"


def _reference_json(name: str):
    path = REFERENCE_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is not available (../shared absent)")
    return json.loads(path.read_text(encoding="utf-8"))


def _puzzle_records(puzzle: dict) -> list[ActivationRecord]:
    # puzzles.json: a sentence item is a token string (activation 0) or [token, activation] (spec §6.1).
    records = []
    for sentence in puzzle["sentences"]:
        tokens = [item if isinstance(item, str) else item[0] for item in sentence]
        acts = [0.0 if isinstance(item, str) else float(item[1]) for item in sentence]
        records.append(ActivationRecord(tokens, acts))
    return records


def _colors() -> list[ActivationRecord]:
    return _puzzle_records(_reference_json("puzzles.json")["colors"])


def _target(rendered) -> str:
    return rendered.messages[-1]["content"]


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- golden prompts of the reference (SEED code executed on puzzle `colors`) --------------------------


@pytest.mark.parametrize("name", PAPER_FORMATS)
def test_golden_chat_prompt(name):
    golden = _reference_json("derived_golden_prompts_colors_puzzle.json")
    rendered = render(name, _colors(), cutoff=1)
    assert _canonical(rendered.messages) == _canonical(golden[name])
    assert rendered.omitted_few_shot_records == 0


def test_golden_original_instruction_following_string():
    golden = _reference_json("derived_golden_prompts_colors_puzzle.json")
    assert render("Original", _colors(), cutoff=1).text == golden["Original_IF"]


def test_golden_summary_after_one_avhs_call_only_with_flag():
    golden = _reference_json("derived_golden_prompts_colors_puzzle.json")
    # Default: AVHS copies, so a later Summary is unchanged.
    render("AVHS", _colors())
    assert render("Summary", _colors(), cutoff=1).messages == golden["Summary"]
    # Flag: the state's few-shot examples are overwritten by AVHS, as in SEED.
    state = SeedMutationState()
    assert render("Summary", _colors(), cutoff=1, mutate_like_seed=True, seed_state=state).messages == golden["Summary"]
    render("AVHS", _colors(), mutate_like_seed=True, seed_state=state)
    after = render("Summary", _colors(), cutoff=1, mutate_like_seed=True, seed_state=state)
    assert after.messages == golden["Summary_after_one_AVHS_call"]
    # Original and AVHS themselves are unaffected (re-normalising 0..10 integers by 10 is the identity).
    for name in ("Original", "AVHS"):
        assert render(name, _colors(), mutate_like_seed=True, seed_state=state).messages == golden[name]
    state.reset()
    assert render("Summary", _colors(), cutoff=1, mutate_like_seed=True, seed_state=state).messages == golden["Summary"]


def test_package_few_shot_data_matches_reference_export():
    shared = _reference_json("derived_few_shot_examples.json")
    for name, key in (("original", "ORIGINAL_EXAMPLES"), ("test", "TEST_EXAMPLES")):
        ours = load_few_shot_set(name)
        assert [e.explanation for e in ours] == [e["explanation"] for e in shared[key]]
        assert [[r.activations for r in e.activation_records] for e in ours] == [
            [r["activations"] for r in e["activation_records"]] for e in shared[key]
        ]


def test_all_puzzles_render_deterministically_in_all_formats():
    puzzles = _reference_json("puzzles.json")
    assert len(puzzles) == 19
    for name, puzzle in puzzles.items():
        for fmt in PAPER_FORMATS:
            first = render(fmt, _puzzle_records(puzzle), cutoff=1)
            second = render(fmt, _puzzle_records(puzzle), cutoff=1)
            line = first.to_json_line(NeuronId(0, 0))
            assert line == second.to_json_line(NeuronId(0, 0)), (name, fmt)
            assert first.omitted_few_shot_records == 0
            assert _target(first).startswith("\n\nNeuron 4\nActivations:") and _target(first).endswith(ENDING)
            if fmt != "Original":
                assert _target(first).count(" Text excerpt - ") == len(puzzle["sentences"])


# --- exact layouts from the spec, no shared data needed -----------------------------------------------


def _cat_dog():
    return [
        ActivationRecord(["The", " cat", " sat", " on", " the", " mat"], [0, 2, -0.3, 0.1, 0, 4]),
        ActivationRecord(["A", " dog", " ran"], [-0.1, 3, 0.5]),
    ]


def test_spec_rendered_target_blocks():
    summary = _target(render("Summary", _cat_dog(), cutoff=1.0))
    assert summary == (
        "\n\nNeuron 4\nActivations:\n\n Text excerpt - A:\n<start>The cat sat on the mat<end> \n\n"
        "Highly activating tokens:\n cat, mat\n\n Text excerpt - B:\n<start>A dog ran<end> \n\n"
        "Highly activating tokens:\n dog\n" + ENDING
    )
    highlight = _target(render("Highlight", _cat_dog(), cutoff=1.0))
    assert "<start>The[ cat] sat on the[ mat]<end> \n\n Text excerpt - B:\n<start>A[ dog] ran<end> \n" + ENDING in highlight
    avhs = _target(render("AVHS", _cat_dog(), cutoff=1.0))
    assert "<start>The[ cat] sat on the[ mat]<end> \n\nHighly activating tokens:\n cat\t5, mat\t10\n" in avhs
    assert "<start>A[ dog][ ran]<end> \n\nHighly activating tokens:\n dog\t7, ran\t1\n" in avhs


def test_openai_harmony_format_with_test_examples():
    records = [ActivationRecord(["a", "b", "c"], [1, 0, 0]), ActivationRecord(["d", "e", "f"], [0, 1, 0])]
    block = "\nActivations:\n<start>\na\t10\nb\t0\nc\t0\n<end>\n<start>\nd\t0\ne\t10\nf\t0\n<end>\n\nExplanation of neuron"
    messages = render("Original", records, few_shot="test").messages
    assert messages[1:] == [
        {"role": "user", "content": f"\n\nNeuron 1{block} 1 behavior: the main thing this neuron does is find"},
        {"role": "assistant", "content": " vowels."},
        {"role": "user", "content": f"\n\nNeuron 2{block} 2 behavior: the main thing this neuron does is find"},
    ]


def test_few_shot_examples_reformatted_as_in_spec():
    messages = render("HighlightSummary", _cat_dog(), cutoff=1.0).messages
    ex1, ex2, ex3 = messages[1]["content"], messages[3]["content"], messages[5]["content"]
    assert "impossible[ disappearing]/reapp[earing] acts" in ex1 and "tokens:\n disappearing,earing\n" in ex1
    assert "tokens:\naping, the, affecting\n" in ex1
    assert "tokens:\n arrest\n" in ex2 and "tokens:\nigo\n" in ex2
    assert "tokens:\nness\n" in ex3 and "tokens:\n're, in, this, together\n" in ex3  # 1.0 is not > 1.0


def test_raw_tokens_render_as_the_reference_does():
    record = ActivationRecord([" héllo", "\n", "\tx", "日本", " end"], [2.0, 0.0, 1.5, 4.0, -1.0])
    head = "\n\nNeuron 4\nActivations:"
    assert _target(render("Original", [record])) == head + "\n<start>\n héllo\t5\n\n\t0\n\tx\t3\n日本\t10\n end\t0\n<end>\n" + ENDING
    assert _target(render("Summary", [record], cutoff=1.0)) == (
        head + "\n\n Text excerpt - A:\n<start> héllo\n\tx日本 end<end> \n\nHighly activating tokens:\n héllo,\tx,日本\n" + ENDING
    )
    assert _target(render("Highlight", [record], cutoff=1.0)) == (
        head + "\n\n Text excerpt - A:\n<start>[ héllo]\n[\tx][日本] end<end> \n" + ENDING
    )
    assert _target(render("AVHS", [record])) == (
        head + "\n\n Text excerpt - A:\n<start>[ héllo]\n[\tx][日本] end<end> \n\n"
        "Highly activating tokens:\n héllo\t5,\tx\t3,日本\t10\n" + ENDING
    )


def test_repeat_section_only_below_one_fifth_non_zero():
    five = [ActivationRecord([f" t{i}" for i in range(5)], [1.0, 0, 0, 0, 0])]  # exactly 0.2: no repeat
    six = [ActivationRecord([f" t{i}" for i in range(6)], [1.0, 0, 0, 0, 0, 0])]
    assert "Same activations" not in _target(render("Original", five))
    assert "Same activations, but with all zeros filtered out:\n<start>\n t0\t10\n<end>\n" in _target(render("Original", six))
    assert "Same activations" not in _target(render("Summary", six, cutoff=0.5))


def test_instruction_following_string_structure():
    rendered = render("Summary", _cat_dog(), cutoff=1.0)
    assert rendered.text.count("<|endofprompt|>") == 1
    assert rendered.text.endswith("\nExplanation of neuron 4 behavior:<|endofprompt|> the main thing this neuron does is find")
    assert rendered.text.startswith(rendered.messages[0]["content"] + "\n\nNeuron 1\n")
    assert "behavior: the main thing this neuron does is find present tense verbs ending in 'ing'.\n\nNeuron 2" in rendered.text


# --- selection rules ----------------------------------------------------------------------------------


def _random_records(seed: int, cutoff: float) -> list[ActivationRecord]:
    rng = random.Random(seed)
    records = []
    for r in range(5):
        acts = [rng.choice([cutoff, -0.5, 0.0, round(rng.uniform(-1, 3 * cutoff), 3)]) for _ in range(12)]
        records.append(ActivationRecord([f" w{r}_{i}" for i in range(12)], acts))
    return records


@pytest.mark.parametrize("seed", range(5))
def test_new_formats_mark_exactly_the_tokens_above_cutoff(seed):
    cutoff = 0.8
    records = _random_records(seed, cutoff)
    expected = [[t for t, a in zip(r.tokens, r.activations) if a > cutoff] for r in records]
    for name in ("Summary", "Highlight", "HighlightSummary"):
        target = _target(render(name, records, cutoff=cutoff))
        if name != "Summary":
            bodies = re.findall(r"<start>(.*?)<end>", target, flags=re.S)
            assert [re.findall(r"\[([^\]]*)\]", b) for b in bodies] == expected
        if name != "Highlight":
            lists = re.findall(r"Highly activating tokens:\n(.*?)\n", target)
            assert lists == [",".join(tokens) for tokens in expected]


@pytest.mark.parametrize("seed", range(5))
def test_avhs_marks_normalised_nonzero_with_values_1_to_10(seed):
    records = _random_records(seed, 0.8)
    max_a = max(max(0.0, a) for r in records for a in r.activations)
    target = _target(render("AVHS", records, cutoff=123.0))  # AVHS ignores the cutoff
    lists = re.findall(r"Highly activating tokens:\n(.*?)\n", target)
    for record, line in zip(records, lists):
        pairs = [p.split("\t") for p in line.split(",")] if line else []
        assert [t for t, _ in pairs] == [t for t, a in zip(record.tokens, record.activations) if a >= max_a / 10]
        assert all(1 <= int(v) <= 10 for _, v in pairs)
        assert all(int(v) == min(10, math.floor(10 * max(0.0, a) / max_a)) for (t, v), a in
                   zip(pairs, [a for a in record.activations if a >= max_a / 10]))


def test_cutoff_is_required_only_where_used():
    with pytest.raises(ValueError, match="cutoff"):
        render("Summary", _cat_dog())
    assert render("Original", _cat_dog()).cutoff is None
    assert render("AVHS", _cat_dog(), cutoff=2.0).cutoff is None
    assert render("Highlight", _cat_dog(), cutoff=2.0).cutoff == 2.0


def test_all_zero_neuron_renders():
    records = [ActivationRecord([" a", " b"], [0.0, 0.0]), ActivationRecord([" c"], [-1.0])]
    for name in PAPER_FORMATS:
        target = _target(render(name, records, cutoff=0.5))
        assert "[" not in target
    original = _target(render("Original", records))
    assert original == (
        "\n\nNeuron 4\nActivations:\n<start>\n a\t0\n b\t0\n<end>\n<start>\n c\t0\n<end>\n"
        "\nSame activations, but with all zeros filtered out:\n<start>\n\n<end>\n<start>\n\n<end>\n" + ENDING
    )
    assert _target(render("AVHS", records)).count("Highly activating tokens:\n\n") == 2


def test_few_shot_examples_and_records_never_mutated_by_default():
    before = [[list(r.activations) for r in e.activation_records] for e in load_few_shot_set("original")]
    records = _cat_dog()
    snapshot = [list(r.activations) for r in records]
    for name in PAPER_FORMATS:
        render(name, records, cutoff=1.0)
    assert [list(r.activations) for r in records] == snapshot
    after = [[list(r.activations) for r in e.activation_records] for e in load_few_shot_set("original")]
    assert after == before
    # With the flag, AVHS overwrites the caller's records with normalised integers, like SEED.
    render("AVHS", records, mutate_like_seed=True, seed_state=SeedMutationState())
    assert [r.activations for r in records] == [[0, 5, 0, 0, 0, 10], [0, 7, 1]]


# --- registry, labels, variants -----------------------------------------------------------------------


def test_unknown_format_lists_known_names():
    with pytest.raises(ValueError) as info:
        get_format("Sumary")
    for name in PAPER_FORMATS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="HighlightSummary"):
        render("nope", _cat_dog(), cutoff=1.0)


def test_labels_continue_past_z():
    assert [excerpt_label(i) for i in (0, 25, 26, 27, 51, 52, 701, 702)] == ["A", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]
    records = [ActivationRecord([f" t{i}"], [float(i)]) for i in range(28)]
    target = _target(render("Summary", records, cutoff=1.0))
    labels = re.findall(r" Text excerpt - ([A-Z]+):", target)
    assert labels[-3:] == ["Z", "AA", "AB"] and len(labels) == 28


def test_variant_from_config():
    variant = variant_from_config({"base": "Summary", "system_message": "Be brief.", "max_excerpts": 3})
    assert variant.name == variant_from_config({"max_excerpts": 3, "system_message": "Be brief.", "base": "Summary"}).name
    records = [ActivationRecord([f" t{i}"], [2.0]) for i in range(5)]
    rendered = variant(records, cutoff=1.0)
    assert rendered.messages[0]["content"] == "Be brief."
    assert re.findall(r" Text excerpt - ([A-Z]+):", _target(rendered)) == ["A", "B", "C"]
    assert rendered.format_name == variant.name
    fraction = variant_from_config({"base": "Highlight", "name": "Highlight-half", "cutoff_fraction_of_max": 0.5})
    assert fraction(_cat_dog()).cutoff == 2.0
    assert "<start>[ x] y[ z]<end>" in _target(fraction([ActivationRecord([" x", " y", " z"], [1.0, 0.5, 0.6])]))
    for bad in ({"base": "Summary", "max_excerpt": 3}, {"base": "Summary", "max_excerpts": "3"},
                {"base": "Summary", "repeat_non_zero": 1}, {"base": "Nope"}, {"system_message": "x"}):
        with pytest.raises(ValueError):
            variant_from_config(bad)


def test_register_custom_renderer_and_format():
    register_renderer("upper_test", lambda block: "\n" + "|".join("".join(r.tokens).upper() for r in block.records))
    try:
        register_format(PromptFormat("Upper", "sys", "upper_test", selection="none", few_shot="none"))
        rendered = render("Upper", _cat_dog())
        assert rendered.messages == [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "\n\nNeuron 1\nActivations:\nTHE CAT SAT ON THE MAT|A DOG RAN"
             "\nExplanation of neuron 1 behavior: the main thing this neuron does is find"},
        ]
        with pytest.raises(ValueError, match="already registered"):
            register_format(PromptFormat("Upper", "sys", "upper_test"))
    finally:
        FORMATS.pop("Upper", None)
        RENDERERS.pop("upper_test", None)


# --- context limit ------------------------------------------------------------------------------------


def test_context_limit_omits_few_shot_records_in_reference_order():
    records = _cat_dog()
    full = render("Original", records, context_limit=None)
    assert full.context_tokens == count_chat_tokens(full.messages, overhead="reference")
    assert render("Original", records, context_limit=full.context_tokens + 60).omitted_few_shot_records == 0
    one = render("Original", records, context_limit=full.context_tokens + 59)
    assert one.omitted_few_shot_records == 1
    assert one.messages[1]["content"].count("<start>") == 2  # example 1: one record + its repeat section
    assert one.messages[3]["content"].count("<start>") == 4  # example 2 untouched
    tiny = render("Original", records, context_limit=100)
    assert tiny.omitted_few_shot_records == 3  # every example had 2 records; the prompt is returned anyway
    # Original re-normalises over the shown records, AVHS over all of the example's records.
    assert "\nness\t10\n" in tiny.messages[5]["content"]
    assert "ness\t7" in render("AVHS", records, context_limit=100).messages[5]["content"]
    text = render("Original", records, context_limit=100, context_check="text")
    assert text.omitted_few_shot_records == 3


def test_two_k_mode_keeps_one_record_per_example_and_two_target_records():
    records = [ActivationRecord([f" t{i}"], [1.0]) for i in range(4)]
    rendered = render("Summary", records, cutoff=0.5, context_limit=TWO_K_CONTEXT)
    assert all(" Text excerpt - B:" not in m["content"] for m in rendered.messages[1:-1])
    assert re.findall(r" Text excerpt - ([A-Z]+):", _target(rendered)) == ["A", "B"]
    assert rendered.omitted_few_shot_records == 0


# --- serialisation ------------------------------------------------------------------------------------


def test_json_line_and_prompt_hash():
    rendered = render("HighlightSummary", [ActivationRecord([" é", " x"], [2.0, 0.0])], cutoff=1.0)
    record = rendered.to_json_dict(NeuronId(3, 17), "HighlightSummary")
    assert set(record) == {"layer", "neuron", "format", "messages", "text", "prompt_tokens", "cutoff",
                           "omitted_few_shot_records", "prompt_hash"}
    assert (record["layer"], record["neuron"], record["cutoff"]) == (3, 17, 1.0)
    assert record["prompt_tokens"] == count_chat_tokens(rendered.messages)
    assert record["prompt_hash"] == prompt_hash(rendered) == hashlib.sha256(_canonical(rendered.messages)).hexdigest()
    line = rendered.to_json_line(NeuronId(3, 17))
    assert line == json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert "[ é]" in line and "\n" not in line
    assert prompt_hash(render("Highlight", [ActivationRecord([" é", " x"], [2.0, 0.0])], cutoff=1.0)) != record["prompt_hash"]
