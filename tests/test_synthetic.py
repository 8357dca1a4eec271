"""Synthetic users: seeded, well-formed, and honest about what a question may know."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from lpm_local.chat.encoding import Turn
from lpm_local.research.synthetic import (
    RECALL_TEMPLATES,
    SyntheticConfig,
    SyntheticUsers,
    load_msc_personas,
)

PERSONAS = {
    split: [
        {
            "Speaker 1": [f"I like {split} thing {i}-{j}." for j in range(6)],
            "Speaker 2": [f"My pet {split} {i} is number {j}." for j in range(5)] + ["I love jazz"],
            "in_dataset": 0,
        }
        for i in range(12)
    ]
    for split in ("train", "valid", "test")
}
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "msc_personas_all.json"


@pytest.fixture()
def personas(tmp_path):
    path = tmp_path / "personas.json"
    path.write_text(json.dumps(PERSONAS))
    return load_msc_personas(path)


def test_loader_cleans_and_splits(personas):
    assert set(personas) == {"train", "valid", "test"} and len(personas["test"]) == 24
    assert "I love jazz." in personas["test"][1]  # punctuation added


def test_same_seed_same_user_other_seed_differs(personas):
    a = SyntheticUsers(personas, "test", seed=1).user(3)
    assert a == SyntheticUsers(personas, "test", seed=1).user(3)
    assert a != SyntheticUsers(personas, "test", seed=2).user(3)


def test_recall_questions_are_well_formed(personas):
    gen = SyntheticUsers(personas, "test", seed=0, config=SyntheticConfig(max_facts=5))
    for user in gen.users(10):
        facts = set(user.persona.facts)
        history = " ".join(t.content for t in user.history())
        assert len(facts) == 5 and all(f[:-1].lower() in history.lower() for f in facts)
        for q in user.questions:
            assert q.qtype == "recall_fact" and len(set(q.options)) == 4
            assert q.options[q.correct] in facts
            assert not facts & {o for i, o in enumerate(q.options) if i != q.correct}
            assert (q.prompt, q.answer_prefix) == RECALL_TEMPLATES[0]
            last = user.sessions[q.asked_after_session].turns[-1].timestamp
            assert datetime.fromisoformat(q.asked_at) > datetime.fromisoformat(last)


def test_sessions_are_ordered_in_time(personas):
    cfg = SyntheticConfig(n_sessions=3, preference_changes=1, recall_turn_prob=1.0)
    user = SyntheticUsers(personas, "train", seed=0, config=cfg).user(2)
    stamps = [datetime.fromisoformat(t.timestamp) for s in user.sessions for t in s.turns]
    assert stamps == sorted(stamps) and len(user.sessions) == 3
    assert [t.kind for t in user.sessions[1].turns[:2]] == ["recall_q", "recall_a"]
    assert all(t.role in ("user", "assistant") for s in user.sessions for t in s.turns)


def test_history_is_the_chats_turns_without_their_stamps(personas):
    user = SyntheticUsers(personas, "train", seed=0, config=SyntheticConfig(n_sessions=2)).user(1)
    said = [t for s in user.sessions for t in s.turns]
    assert all(isinstance(t, Turn) for t in said)  # a synthetic turn is a chat turn
    assert user.history() == [Turn(t.role, t.content) for t in said]
    assert all(type(t) is Turn for t in user.history())


def test_preference_change_is_only_known_after_it_happens(personas):
    cfg = SyntheticConfig(n_sessions=3, preference_changes=1)
    gen = SyntheticUsers(personas, "train", seed=0, config=cfg)
    users = [u for u in gen.users(12) if u.persona.preferences]
    assert users, "the pool has preference sentences, so some user must get a change"
    for user in users:
        pref = user.persona.preferences[0]
        changed = pref.changed_in[-1]
        before = " ".join(t.content for t in user.history(changed - 1))
        assert pref.current not in before and pref.values[0] in before
        assert pref.current in " ".join(t.content for t in user.history())
        latest = [q for q in user.questions if q.qtype == "latest_preference"][0]
        assert latest.options[latest.correct] == pref.current and pref.values[0] in latest.options


def test_heldout_templates_share_the_history(personas):
    a = SyntheticUsers(personas, "test", seed=0).user(5)
    b = SyntheticUsers(
        personas, "test", seed=0, config=SyntheticConfig(recall_templates=(2, 3))
    ).user(5)
    assert a.history() == b.history()
    assert {q.template for q in b.questions} <= {2, 3}


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_sessions=0), "n_sessions"),
        (dict(preference_changes=1), "preference_changes"),
        (dict(recall_turn_prob=2.0), "recall_turn_prob"),
        (dict(recall_templates=(9,)), "recall_templates"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kw)


def test_unknown_split_is_refused(personas):
    with pytest.raises(ValueError, match="no personas"):
        SyntheticUsers(personas, "nope")


@pytest.mark.skipif(not REAL.exists(), reason="MSC persona file not present")
def test_real_msc_file_gives_thousands_of_users():
    personas = load_msc_personas(REAL)
    assert len(personas["train"]) > 5000 and len(personas["test"]) > 1000
    user = SyntheticUsers(personas, "test", seed=0).user(0)
    assert 2 <= len(user.persona.facts) <= 5 and len(user.questions) == len(user.persona.facts)
