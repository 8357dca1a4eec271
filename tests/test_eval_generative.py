"""The generative score of `lpm eval`: which options a free-form reply names, and its report.

The rule (``mentions.py``) is pinned on hand-written replies; then every option of the generated
benchmarks, given verbatim as a reply, must be recognised as itself and nothing else; then a run
with an oracle that answers by generation checks the report's generative numbers.
"""

from __future__ import annotations

import json

import pytest
from test_eval import FAST, fake_personas

from lpm_local.research.eval.cases import token_counter
from lpm_local.research.eval.mentions import generative_hit, mentioned, option_keys, words
from lpm_local.research.eval.methods import BackboneMethod, Conditioning, UserState
from lpm_local.research.eval.personamem import PersonaMemConfig, build_personamem
from lpm_local.research.eval.recall import RecallConfig, build_recall
from lpm_local.research.eval.runner import EvalConfig, run_eval

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MUSIC = ("jazz", "heavy metal", "folk", "techno")
FACTS = ("I have two cats.", "I work as a nurse.", "I drive a red truck.", "I grew up in Ohio.")
REASONS = (
    "it helps me unwind after long shifts",
    "my grandfather used to play it on vinyl",
    "it is the best thing to lift weights to",
    "a friend took me to a festival and I was hooked",
)
EVOLUTION = ("jazz to opera", "opera to jazz", "jazz to techno", "folk to opera")


def test_normalisation_folds_case_punctuation_unicode_and_stems():
    assert words("JAZZ!!!  Hiking, cats.") == words("jazz hike cat")
    assert words("Ｃａｆé—de_Flore") == words("café de flore")  # NFKC width, dash, underscore


@pytest.mark.parametrize(
    ("reply", "options", "names"),
    [
        ("Jazz, mostly late-night trios.", MUSIC, [0]),
        ("jazz and heavy metal, depending on the day", MUSIC, [0, 1]),
        ("nothing in particular", MUSIC, []),
        ("METAL, the heavier the better", MUSIC, []),  # a two-word key must appear whole
        ("Heavy metal!", MUSIC, [1]),
        ("You have two cats at home.", FACTS, [0]),
        ("you have a cat", FACTS, []),  # "two" is part of the fact: both key words needed
        ("that you're a nurse", FACTS, [1]),
        ("it helps you unwind after work", REASONS, [0]),  # 3 of 5 distinctive words
        ("your grandfather", REASONS, []),  # 1 of 5 is not the reason
        ("from jazz to opera last spring", EVOLUTION, [0]),
        ("It went from opera to jazz.", EVOLUTION, [1]),
        ("folk, then opera", EVOLUTION, [3]),
        ("smooth jazz", ("jazz", "smooth jazz", "folk", "techno"), [1]),
        ("plain old jazz", ("jazz", "smooth jazz", "folk", "techno"), [0]),
    ],
)
def test_which_options_a_reply_names(reply, options, names):
    assert mentioned(reply, options) == names


def test_a_hit_is_the_right_option_and_no_other():
    assert generative_hit("Jazz, of course.", MUSIC, 0)
    assert not generative_hit("Jazz or folk.", MUSIC, 0)
    assert not generative_hit("Folk.", MUSIC, 0)
    assert not generative_hit("", MUSIC, 0)


def test_keys_are_the_words_no_other_option_has():
    keys = option_keys(("Kind of Blue by Miles Davis", "Blue Train by John Coltrane", "x", "y"))
    assert set(keys[0].distinctive) == set(words("kind miles davis"))
    assert keys[0].needed == 3  # up to three words: all of them
    reason = option_keys(REASONS)[0]
    assert set(reason.distinctive) == set(words("helps unwind after long shifts"))
    assert reason.needed == 3  # five words, a sentence: half, rounded up
    assert option_keys(EVOLUTION)[0].distinctive == ()  # order only: the ordered rule applies


def test_every_benchmark_option_verbatim_names_itself_alone(tiny_backbone):
    personas = fake_personas()
    count = token_counter(tiny_backbone)
    benches = [
        build_personamem(personas, PersonaMemConfig(users=2, history_tokens=(200, 400)), count),
        build_recall(personas, RecallConfig(users=6), count),
    ]
    checked = 0
    for bench in benches:
        for case in bench.cases:
            for q in case.questions:
                for i, option in enumerate(q.options):
                    assert mentioned(q.answer_prefix + " " + option, q.options) == [i], (
                        q.qid,
                        option,
                    )
                    checked += 1
    assert checked > 200


class Answerer(BackboneMethod):
    """Answers by generation with the option whose text occurs last in its history (or "I don't
    know"), and scores options the other way round: LL and generative accuracy differ."""

    name = "answerer"
    label = "answerer"

    def condition(self, state, question):
        return Conditioning()

    def fit(self, history):
        return UserState(tuple(history))

    def _best(self, state, question) -> int | None:
        text = " ".join(t.content.lower() for t in state.history)
        where = [text.rfind(o.lower().rstrip(".")) for o in question.options]
        return max(range(len(where)), key=where.__getitem__) if max(where) >= 0 else None

    def score_options(self, state, question, options=None):
        best = self._best(state, question)
        return [0.0 if i != best else -1.0 for i in range(len(question.options))]

    def generate(self, state, question, *, max_new_tokens=32):
        best = self._best(state, question)
        return "I don't know" if best is None else question.options[best]


def test_the_report_carries_both_accuracies_per_type_and_length(tiny_backbone, tmp_path):
    personas = fake_personas()
    bench = build_personamem(
        personas,
        PersonaMemConfig(users=2, history_tokens=(200, 400), users_per_length=(2, 1)),
        token_counter(tiny_backbone),
    )
    result = run_eval(
        tiny_backbone,
        [bench],
        [Answerer(tiny_backbone, FAST)],
        config=EvalConfig(ttft_samples=0, max_new_tokens=4),
        out_dir=tmp_path,
    )
    rows = result["records"]
    assert all("reply" in r and "gen_hit" in r for r in rows)
    stated = [r for r in rows if r["qtype"] in ("recall_facts", "acknowledge_latest_preference")]
    assert stated and all(r["gen_hit"] and not r["hit"] for r in stated)
    m = result["benchmarks"]["personamem"]["methods"]["answerer"]
    hits = [r["gen_hit"] for r in rows]
    assert m["gen_accuracy"] == pytest.approx(sum(hits) / len(hits)) and m["gen_accuracy"] > 0.4
    lo, hi = m["gen_accuracy_ci95"]
    assert lo < m["gen_accuracy"] < hi
    assert set(m["gen_per_type"]) == set(bench.qtypes) == set(m["gen_per_type_ci95"])
    assert set(m["per_type_ci95"]) == set(bench.qtypes)
    assert set(m["per_length"]) == {"200", "400"}
    for p in m["per_length"].values():
        assert p["gen_accuracy_ci95"][0] <= p["gen_accuracy"] <= p["gen_accuracy_ci95"][1]
        assert p["accuracy_ci95"][0] <= p["accuracy"] <= p["accuracy_ci95"][1]
    text = (tmp_path / "eval.md").read_text()
    assert "generative (95% CI)" in text and "log-likelihood / generative accuracy" in text
    assert f"{100 * m['gen_accuracy']:.1f}%" in text
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert (
        saved["benchmarks"]["personamem"]["methods"]["answerer"]["gen_accuracy"]
        == (m["gen_accuracy"])
    )
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_no_generate_measures_log_likelihood_only(tiny_backbone):
    bench = build_personamem(
        fake_personas(),
        PersonaMemConfig(users=1, history_tokens=(200,)),
        token_counter(tiny_backbone),
    )
    result = run_eval(
        tiny_backbone,
        [bench],
        [Answerer(tiny_backbone, FAST)],
        config=EvalConfig(ttft_samples=0, generate=False),
    )
    assert not any("reply" in r for r in result["records"])
    assert "gen_accuracy" not in result["benchmarks"]["personamem"]["methods"]["answerer"]
