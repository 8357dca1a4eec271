"""One refit job on the tiny Qwen3: windows, warm start, commit rule, a failure leaving the
memory bitwise unchanged (R4), cancel, the lock."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
from dataclasses import asdict

import pytest

from lpm_local.memory import inspection as memory_inspect
from lpm_local.memory import refit as refit_module
from lpm_local.memory import versions as V
from lpm_local.memory.refit import RefitSettings, run_refit, select_windows
from lpm_local.memory.scheduler import ProfileLock, RefitBusy, lock_path, locked_refit
from lpm_local.memory.slots import slots_from_bytes
from lpm_local.storage.records import NewMessage
from lpm_local.storage.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = RefitSettings(steps=6, eval_every=2, patience=3, max_windows=12)


def add_chat(
    store: Store,
    profile_id: int,
    title: str,
    n_exchanges: int,
    *,
    word: str = "tea",
    excluded: bool = False,
) -> int:
    conv = store.create_conversation(profile_id, title, exclude_from_memory=excluded)
    store.add_messages(
        conv.id,
        [
            NewMessage(role, text)
            for i in range(n_exchanges)
            for role, text in (
                ("user", f"I like green {word} number {i} in Lyon."),
                ("assistant", f"Noted, {word} {i}. How are you today?"),
            )
        ],
    )
    return conv.id


def refit(store, frozen, profile_id, settings=FAST, **kw):
    return locked_refit(
        store, profile_id, lambda: run_refit(store, frozen, profile_id, settings=settings, **kw)
    )


def snapshot(store: Store, profile_id: int):
    """Everything a failed refit must leave as it was: pointer, version rows and their bytes."""
    current = store.get_profile_by_id(profile_id).current_version_id
    rows = store.list_memory_versions(profile_id)
    return current, [(v.id, store.get_memory_version(v.id).tensors) for v in rows]


def test_refit_commits_a_checked_version(store, frozen):
    profile = store.ensure_profile()
    convs = [add_chat(store, profile.id, f"chat {c}", 4) for c in range(3)]
    outcome = refit(store, frozen, profile.id, reason="test")
    assert outcome.status == "committed", outcome
    assert outcome.heldout_after < outcome.heldout_before
    version = store.get_memory_version(outcome.new_version_id)
    assert store.get_profile_by_id(profile.id).current_version_id == version.id
    slots, config = slots_from_bytes(version.tensors)
    assert tuple(slots.shape) == (frozen.config.n_slots, frozen.config.slot_dim)
    assert config == frozen.config
    assert version.projector_sha256 == frozen.projector_sha256
    assert version.backbone == frozen.backbone.name
    assert version.trained_through_message_id == store.last_message_id(profile.id)
    assert version.heldout_loss == pytest.approx(outcome.heldout_after)
    meta = json.loads(version.config_json)
    assert meta["memory"] == asdict(frozen.config)
    assert set(meta["sources"]) <= {str(c) for c in convs}
    row = store.list_refits(profile.id)[0]
    assert (row.status, row.new_version_id) == ("committed", version.id)


def test_second_refit_warm_starts_from_the_current_version(store, frozen):
    profile = store.ensure_profile()
    for c in range(3):
        add_chat(store, profile.id, f"chat {c}", 4)
    first = refit(store, frozen, profile.id)
    second = refit(store, frozen, profile.id)
    assert second.base_version_id == first.new_version_id
    # Same history, same held-out windows: the second starts exactly where the first ended.
    assert second.heldout_before == pytest.approx(first.heldout_after, abs=1e-5)
    if second.committed:
        assert store.get_memory_version(second.new_version_id).parent_id == first.new_version_id


def test_excluded_conversations_never_reach_the_refit(store, frozen, monkeypatch):
    profile = store.ensure_profile()
    kept = add_chat(store, profile.id, "kept", 4)
    hidden = add_chat(store, profile.id, "hidden", 4, word="secret", excluded=True)
    read: list[int] = []
    real = store.messages
    monkeypatch.setattr(store, "messages", lambda cid: read.append(cid) or real(cid))
    examples = select_windows(store, frozen, profile.id, FAST)
    assert hidden not in read and set(examples.owner.values()) == {kept}
    secret = frozen.chat.text_ids("secret")
    assert not any(_contains(w.input_ids, secret) for w in examples.windows)
    outcome = refit(store, frozen, profile.id)
    assert hidden not in read
    if outcome.committed:
        sources = json.loads(store.get_memory_version(outcome.new_version_id).config_json)[
            "sources"
        ]
        assert str(hidden) not in sources


def _contains(seq, sub) -> bool:
    return any(tuple(seq[i : i + len(sub)]) == tuple(sub) for i in range(len(seq) - len(sub) + 1))


def test_window_budget_bounds_what_is_read_newest_first(store, frozen, monkeypatch):
    profile = store.ensure_profile()
    convs = [add_chat(store, profile.id, f"chat {c}", 3) for c in range(40)]
    read: list[int] = []
    real = store.messages
    monkeypatch.setattr(store, "messages", lambda cid: read.append(cid) or real(cid))
    settings = RefitSettings(max_windows=8, recent_share=0.5)
    examples = select_windows(store, frozen, profile.id, settings)
    assert len(examples.windows) == 8
    assert len(read) <= 8
    owners = set(examples.owner.values())
    assert convs[-1] in owners and convs[-2] in owners  # the newest conversations
    assert owners - set(convs[-2:])  # and a sample of older ones
    assert examples.tokens == sum(len(w.input_ids) for w in examples.windows)


@pytest.mark.parametrize("where", ["fitting", "attribution", "commit"])
def test_an_exception_mid_refit_leaves_memory_bitwise_unchanged(store, frozen, monkeypatch, where):
    profile = store.ensure_profile()
    for c in range(3):
        add_chat(store, profile.id, f"chat {c}", 4)
    assert refit(store, frozen, profile.id).committed
    add_chat(store, profile.id, "new", 4, word="coffee")
    before = snapshot(store, profile.id)

    def boom(*args, **kwargs):
        raise RuntimeError(f"injected failure in {where}")

    kwargs = {}
    if where == "fitting":
        kwargs["between_steps"] = boom
    elif where == "attribution":
        monkeypatch.setattr(memory_inspect, "conversation_shares", boom)
    else:
        monkeypatch.setattr(V, "prune_versions", boom)  # inside the commit transaction
    with pytest.raises(RuntimeError, match="injected"):
        refit(store, frozen, profile.id, settings=RefitSettings(steps=4, eval_every=1), **kwargs)
    assert snapshot(store, profile.id) == before
    assert store.list_refits(profile.id)[0].status == "failed"


@pytest.mark.parametrize("phase", ["writing recall questions", "fitting"])
def test_cancel_writes_nothing(store, frozen, phase):
    """Cancelled at the first yield to the chat: while the backbone writes the recall questions,
    or (without recall examples) after the first Adam step."""
    profile = store.ensure_profile()
    for c in range(3):
        add_chat(store, profile.id, f"chat {c}", 4)
    cancel = threading.Event()
    settings = dataclasses.replace(FAST, recall_examples=phase != "fitting")
    outcome = refit(
        store, frozen, profile.id, settings=settings, cancel=cancel, between_steps=cancel.set
    )
    assert outcome.status == "cancelled"
    assert outcome.steps == (1 if phase == "fitting" else 0)
    assert store.list_memory_versions(profile.id) == []
    assert store.list_refits(profile.id)[0].status == "cancelled"


def test_no_improvement_writes_no_version(store, frozen, monkeypatch):
    profile = store.ensure_profile()
    for c in range(3):
        add_chat(store, profile.id, f"chat {c}", 4)
    real_fit = refit_module.fit_slots

    def worse(*args, **kwargs):  # the real fit, reported as having made held-out loss worse
        result = real_fit(*args, **kwargs)
        return dataclasses.replace(result, heldout_loss_after=result.heldout_loss_before + 0.01)

    monkeypatch.setattr(refit_module, "fit_slots", worse)
    outcome = refit(store, frozen, profile.id)
    assert outcome.status == "no_improvement"
    assert outcome.heldout_after > outcome.heldout_before
    assert store.list_memory_versions(profile.id) == []
    assert store.list_refits(profile.id)[0].status == "no_improvement"
    assert "did not improve" in outcome.summary()


def test_too_little_history_is_no_improvement(store, frozen):
    profile = store.ensure_profile()
    add_chat(store, profile.id, "short", 1)
    outcome = refit(store, frozen, profile.id)
    assert outcome.status == "no_improvement" and "not enough history" in outcome.detail
    assert store.list_memory_versions(profile.id) == []


def test_a_rollback_during_the_refit_wins(store, frozen):
    profile = store.ensure_profile()
    for c in range(3):
        add_chat(store, profile.id, f"chat {c}", 4)
    first = refit(store, frozen, profile.id).new_version_id
    outcome = refit(
        store, frozen, profile.id, between_steps=lambda: store.set_current_version(profile.id, None)
    )
    assert outcome.status == "cancelled" and "changed during the refit" in outcome.detail
    assert store.get_profile_by_id(profile.id).current_version_id is None
    assert [v.id for v in store.list_memory_versions(profile.id)] == [first]


def test_the_profile_lock_is_exclusive_private_and_recovers_dead_refits(store, frozen):
    profile = store.ensure_profile()
    stale = store.start_refit(profile.id)  # as a killed process would leave it
    with ProfileLock(profile.id):
        assert stat.S_IMODE(os.stat(lock_path(profile.id)).st_mode) == 0o600
        with pytest.raises(RefitBusy, match=f"process {os.getpid()}"):
            locked_refit(store, profile.id, lambda: None)
    assert next(r for r in store.list_refits(profile.id) if r.id == stale).status == "running"
    locked_refit(store, profile.id, lambda: None)
    assert next(r for r in store.list_refits(profile.id) if r.id == stale).status == "failed"
