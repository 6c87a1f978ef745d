"""Detection and fuzzing scorers' core: held-out examples (no leakage), prompts, strict parsing, metrics and
chance floors; scripted perfect and random answerers score as they must."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from autointerp.classify.core import (LeakageError, chance_floors, detection_examples, excerpt_text,
                                      fuzzing_examples, metrics, parse_answers, render_messages)


def valid_records(rng=None, hot_random=False):
    """5 top records (a spike of 5-9 on one token) and 5 random ones (quiet, one optionally as hot as a top)."""
    recs = []
    for i in range(10):
        acts = [0.1] * 8
        if i < 5:
            acts[i] = 5.0 + i
        elif hot_random and i == 7:
            acts[2] = 6.0
        recs.append({"source": "top" if i < 5 else "random", "excerpt_id": 100 + i,
                     "tokens": [f" t{i}_{j}" for j in range(8)], "activations": acts})
    return recs


def test_detection_labels_use_the_weakest_held_out_top_record():
    examples = detection_examples(valid_records(hot_random=True), train_excerpts=[1, 2, 3])
    assert [e.label for e in examples] == [True] * 5 + [False, False, True, False, False]  # 6.0 >= 5.0


def test_examples_never_reuse_the_explainers_excerpts():
    with pytest.raises(LeakageError, match=r"excerpts \[103\]"):
        detection_examples(valid_records(), train_excerpts=[103, 999])
    with pytest.raises(LeakageError):
        fuzzing_examples(valid_records(), [104], np.random.default_rng(0))


def test_fuzzing_marks_the_true_tokens_or_as_many_others():
    examples = fuzzing_examples(valid_records(), [], np.random.default_rng(0))
    assert len(examples) == 10 and sum(e.label for e in examples) == 5
    for true, false in zip(examples[::2], examples[1::2]):
        assert true.record == false.record and true.marks == (true.record,)  # the spike is the only hot token
        assert len(false.marks) == 1 and false.marks != true.marks
    text = excerpt_text(examples[0])
    assert text.count("<<") == 1 and "<< t0_0>>" in text


def test_one_request_per_neuron_lists_every_excerpt():
    ex = detection_examples(valid_records(), [])
    messages = render_messages("detection", " words like t.", ex)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user.startswith("Explanation: words like t.") and all(f"Excerpt {i}: " in user for i in range(1, 11))
    assert "marked" in render_messages("fuzzing", "x", ex)[0]["content"]


@pytest.mark.parametrize("text, expected", [
    ("1: 1\n2: 0\n3: 1", [True, False, True]),
    ("Excerpt 1: yes\nexcerpt 2 - no\n3) 1.", [True, False, True]),
    ("1: 1\n3: 0", [True, None, False]),  # a missing answer is unparseable
    ("1: 1\n1: 0\n2: 0\n3: 0", [None, False, False]),  # two different answers to one excerpt
    ("1: maybe\n2: 1 because\n3: 0", [None, None, False]),  # malformed lines are not guessed
    ("The answers are 1, 0, 1", [None, None, None]),
    ("", [None, None, None]),
])
def test_answers_are_parsed_strictly(text, expected):
    assert parse_answers(text, 3) == expected


def test_metrics_count_unparseable_answers_as_wrong():
    labels = [True, True, False, False]
    m = metrics(labels, [True, None, False, None])
    assert (m["tp"], m["fn"], m["tn"], m["fp"], m["n_unparseable"]) == (1, 0, 1, 0, 2)
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5 and m["recall"] == 0.5 and m["precision"] == 1.0
    perfect = metrics(labels, labels)
    assert perfect["balanced_accuracy"] == perfect["f1"] == perfect["accuracy"] == 1.0


def test_chance_floors_match_enumeration():
    floors = chance_floors(2, 3)
    assert floors["accuracy_always_yes"] == 0.4 and floors["accuracy_always_no"] == 0.6
    assert floors["balanced_accuracy_always_yes"] == floors["balanced_accuracy_always_no"] == 0.5
    # every coin-flip outcome of 5 examples, equally likely: the balanced accuracies' 2.5% and 97.5% points
    outcomes = sorted((sum(a) / 2 + sum(1 - b for b in bs) / 3) / 2
                      for a in itertools.product([0, 1], repeat=2) for bs in itertools.product([0, 1], repeat=3))
    assert floors["balanced_accuracy_random_low"] == pytest.approx(outcomes[0])
    assert floors["balanced_accuracy_random_high"] == pytest.approx(outcomes[-1])
    assert floors["balanced_accuracy_random"] == pytest.approx(0.5)
    # F1 of always yes: precision 2/5, recall 1; of always no: 0 (no true positive)
    assert floors["f1_always_yes"] == pytest.approx(2 * 0.4 / 1.4) and floors["f1_always_no"] == 0.0
    # expected coin-flip F1, enumerated answer by answer (precision undefined only when nothing is a yes)
    f1s = []
    for answers in itertools.product([0, 1], repeat=5):
        labels = [1, 1, 0, 0, 0]
        tp = sum(a and l for a, l in zip(answers, labels))
        fp = sum(a and not l for a, l in zip(answers, labels))
        f1s.append(2 * tp / (2 * tp + fp + (2 - tp)))
    assert floors["f1_random"] == pytest.approx(np.mean(f1s))
    # negatives only: balanced accuracy is the specificity, Y/4 with Y ~ Bin(4, 1/2)
    only_negative = chance_floors(0, 4)
    assert (only_negative["balanced_accuracy_random_low"], only_negative["balanced_accuracy_random_high"]) == (0, 1)
    assert math.isnan(only_negative["precision_always_no"])


def test_the_floor_of_a_mean_over_neurons_narrows_with_more_neurons():
    from autointerp.classify.core import random_mean_interval

    one = random_mean_interval([(5, 5)], n_draws=4000, seed=0)
    many = random_mean_interval([(5, 5)] * 25, n_draws=4000, seed=0)
    assert one[0] < many[0] < 0.5 < many[1] < one[1]
    assert random_mean_interval([(5, 5)] * 25, n_draws=4000, seed=0) == many  # seeded: same mixes, same interval
    # the single-unit interval is the exact one up to the draws' resolution
    exact = chance_floors(5, 5)
    assert one == pytest.approx((exact["balanced_accuracy_random_low"], exact["balanced_accuracy_random_high"]),
                                abs=0.101)


def test_a_perfect_answerer_scores_1_and_a_random_one_stays_in_its_floor():
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(200):  # 200 neurons, each asked about its 10 held-out records
        ex = detection_examples(valid_records(hot_random=bool(rng.integers(2))), [])
        labels = [e.label for e in ex]
        perfect = "\n".join(f"{i}: {int(l)}" for i, l in enumerate(labels, 1))
        assert metrics(labels, parse_answers(perfect, len(ex)))["balanced_accuracy"] == 1.0
        coin = "\n".join(f"{i}: {int(rng.integers(2))}" for i in range(1, len(ex) + 1))
        scores.append(metrics(labels, parse_answers(coin, len(ex)))["balanced_accuracy"])
    floors = chance_floors(5, 5)
    inside = np.mean([floors["balanced_accuracy_random_low"] <= s <= floors["balanced_accuracy_random_high"] for s in scores])
    assert inside >= 0.9  # the central 95% interval (discrete, so at least 95% of outcomes up to sampling)
    assert abs(np.mean(scores) - 0.5) < 0.05


def _scripted(answer):
    """A loopback chat model that answers every excerpt of a request with ``answer(excerpt_text)`` (0 or 1)."""
    def script(path, body):
        if path != "/v1/chat/completions":
            return None
        lines = [line for line in body["messages"][-1]["content"].splitlines() if line.startswith("Excerpt ")]
        text = "\n".join(f"{i}: {answer(line.split(': ', 1)[1])}" for i, line in enumerate(lines, 1))
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 4 * len(lines), "total_tokens": 0}}
    return script


@pytest.mark.parametrize("kind", ["detection", "fuzzing"])
def test_scripted_models_through_the_llm_layer(kind, make_client, loopback):
    import asyncio

    from autointerp.classify.runner import score_explanation

    records = valid_records(hot_random=True)
    if kind == "detection":
        examples = detection_examples(records, [])
    else:
        examples = fuzzing_examples(records, [], np.random.default_rng(1))
    truth = {excerpt_text(e): int(e.label) for e in examples}  # what a perfect reader of the explanation knows
    loopback.script = _scripted(lambda excerpt: truth[excerpt])
    client = make_client()
    perfect = asyncio.run(score_explanation(client, kind, "spikes", examples))
    assert perfect["balanced_accuracy"] == 1.0 and perfect["n_unparseable"] == 0 and perfect["requests"] == 1
    assert perfect["balanced_accuracy_random_low"] < 0.5 < perfect["balanced_accuracy_random_high"] and perfect["prompt_tokens"] == 100

    loopback.script = _scripted(lambda excerpt: 1)  # always yes: exactly the always-yes floor
    always = asyncio.run(score_explanation(client, kind, "another explanation", examples))
    assert always["accuracy"] == pytest.approx(always["accuracy_always_yes"])
    assert always["balanced_accuracy"] == 0.5


def test_excerpts_with_line_breaks_stay_on_one_line_each():
    records = valid_records()
    records[0]["tokens"] = ["first", "\n", "second", "\r\n", "third"] + records[0]["tokens"][5:]
    examples = detection_examples(records, [])
    prompt = render_messages("detection", "line breaks", examples)[-1]["content"]
    lines = [line for line in prompt.splitlines() if line.startswith("Excerpt ")]
    assert len(lines) == len(examples) == 10
    assert lines[0].startswith("Excerpt 1: first\\nsecond\\r\\nthird")
