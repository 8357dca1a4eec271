"""What of a message the memory files and probes: its statements, never its questions."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpm_local.chat.encoding import ChatFormat
from lpm_local.memory import refit_examples
from lpm_local.memory.probes import Probe
from lpm_local.memory.refit_examples import Examples, add_recall_examples
from lpm_local.memory.statements import (
    sentences,
    statement_positions,
    statement_text,
    tells_something,
)


@pytest.mark.parametrize(
    ("message", "told"),
    [
        ("I just adopted a cat called Pixel. What should I feed her?",
         "I just adopted a cat called Pixel."),
        ("Where should I travel this summer?", ""),
        ("Hi! I'm Maren.  I work at sea.", "Hi! I'm Maren.  I work at sea."),  # no question: as is
        ("I live in St. Louis. Where should I eat?", "I live in St. Louis."),  # a title's dot
        ("I have a knee injury. Should I ask Dr. Patel?", "I have a knee injury."),
        ("My dog is Rex (a beagle).\n\nAny tips for walks?", "My dog is Rex (a beagle)."),
        ('"Is it?" she asked. I said yes.', "she asked. I said yes."),
        ("Version 2.5 is out? I use 3.1.", "I use 3.1."),  # a dot inside a word ends nothing
        ("I moved to Lisbon!Any cafes?", ""),  # no space after the stop: one sentence
        # A question that tells before it asks keeps its told clause.
        ("I just moved to Berlin, any tips for a flat?", "I just moved to Berlin,"),
        ("Since I'm allergic to nuts, which snacks are safe?", "Since I'm allergic to nuts,"),
        ("How old is he, do you think?", ""),  # the clause asks itself
        ("I love it, whatever you say?", ""),  # "whatever" opens no question
        ("I have two kids. What should we do, if it rains?", "I have two kids."),
    ],
)  # fmt: skip
def test_statements_are_the_sentences_that_are_not_questions(message, told):
    assert statement_text(message) == told


def test_only_a_message_whose_statements_may_hold_a_fact_tells_something():
    assert tells_something("I grew up in Tampere.")
    assert tells_something("I grew up in Tampere. Is it cold there now?")
    assert not tells_something("ok thanks")
    assert not tells_something("Where should I travel this summer?")
    assert not tells_something("Hi! Where should I travel this summer?")  # "Hi!" is too short


_words = st.sampled_from(
    [
        "I",
        "live",
        "in",
        "Oslo",
        "Oslo,",
        "my",
        "cat",
        "cat,",
        "St",
        "Dr",
        "2.5",
        "is",
        "why",
        "what",
    ]
)
_stops = st.sampled_from([".", "?", "!", "", '."', "?)", "\n", ".\n\n"])
_messages = st.lists(
    st.tuples(st.lists(_words, min_size=1, max_size=6), _stops), min_size=1, max_size=5
).map(lambda parts: " ".join(" ".join(words) + stop for words, stop in parts))


@settings(
    max_examples=int(os.environ.get("LPM_FUZZ_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(message=_messages)
def test_the_token_split_keeps_the_same_statements_as_the_text_split(tiny_backbone, message):
    tokenizer = tiny_backbone.tokenizer
    ids = tokenizer.encode(message, add_special_tokens=False)
    kept = statement_positions(tokenizer.decode, ids, range(len(ids)))
    assert kept == sorted(kept) and set(kept) <= set(range(len(ids)))
    read = tokenizer.decode([ids[i] for i in kept])
    assert " ".join(read.split()) == " ".join(statement_text(message).split())
    assert all(s == s.strip() and s for s in sentences(message))


def test_a_probe_quizzes_a_messages_statements_not_its_question(tiny_backbone, monkeypatch):
    seen: list[str] = []

    def write_probes(backbone, chat, messages, **_):  # the backbone's questions, stood in for
        seen.extend(messages)
        return [Probe(question="Q?", answer=f"You said: {m}", message=m) for m in messages]

    monkeypatch.setattr(refit_examples, "write_probes", write_probes)
    frozen = SimpleNamespace(chat=ChatFormat(tiny_backbone.tokenizer), backbone=tiny_backbone)
    turns = [
        ("user", "My sister Ilse is an architect. What should I bring her?"),
        ("assistant", "A ruler."),
        ("user", "What is my job?"),
        ("assistant", "I do not know."),
    ]
    examples = Examples(windows=[], owner={0: 1}, tokens=0, turns={1: turns})
    assert add_recall_examples(frozen, examples, probed_messages=4) == 1
    assert seen == ["My sister Ilse is an architect."]
    assert len(examples.windows) == 1  # the probe's example, owned by its conversation
    assert list(examples.owner.values()) == [1, 1]
