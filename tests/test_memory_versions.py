"""Memory versions: the commit path, the retention policy (R18), rollback and forgetting."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from lpm_local.errors import NotFound
from lpm_local.memory import versions as V
from lpm_local.storage.records import MemoryVersion
from lpm_local.storage.store import Store


def _blob(i: int, size: int = 512) -> bytes:
    return i.to_bytes(4, "little") + os.urandom(size - 4)


def _commit(
    store: Store,
    profile_id: int,
    i: int,
    *,
    through: int | None = None,
    sources=frozenset(),
    size: int = 512,
    policy=V.DEFAULT_POLICY,
):
    """One refit's commit, exactly as run_refit does it (start row, then commit_version)."""
    base = store.get_profile_by_id(profile_id).current_version_id
    refit_id = store.start_refit(profile_id, base)
    blob = V.VersionBlob(
        tensors=_blob(i, size),
        backbone="fake",
        projector_sha256="p" * 64,
        config_json="{}",
        train_loss=1.0,
        heldout_loss=1.0 / (i + 1),
        trained_through_message_id=through,
        reason=f"refit {i}",
        sources=frozenset(sources),
    )
    return V.commit_version(
        store, profile_id, refit_id=refit_id, base_version_id=base, blob=blob, policy=policy
    )


def _version(vid: int, parent: int | None, created: datetime) -> MemoryVersion:
    return MemoryVersion(
        id=vid,
        profile_id=1,
        parent_id=parent,
        created_at=created.isoformat(),
        backbone=None,
        projector_sha256=None,
        config_json=None,
        sha256="x",
        n_bytes=1,
        train_loss=None,
        heldout_loss=None,
        trained_through_message_id=None,
        reason=None,
    )


# -- policy ---------------------------------------------------------------------------------------


def test_policy_keeps_current_and_five_ancestors_when_all_are_old():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = now - timedelta(days=90)
    chain = [
        _version(i, i - 1 if i > 1 else None, old + timedelta(minutes=i)) for i in range(1, 21)
    ]
    keep = V.versions_to_keep(chain, 20, now=now)
    assert keep == {20, 19, 18, 17, 16, 15}


def test_policy_keeps_protected_and_one_per_day_for_thirty_days():
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    versions, vid = [], 0
    for day in range(40):  # 3 versions a day for 40 days, not chained
        for hour in (1, 2, 3):
            vid += 1
            versions.append(_version(vid, None, now - timedelta(days=day, hours=hour)))
    # Protected: two of day 39 (outside the daily window), None and an unknown id.
    keep = V.versions_to_keep(versions, None, protected=[118, 120, None, 999], now=now)
    daily = keep - {118, 120}
    created = {v.id: datetime.fromisoformat(v.created_at) for v in versions}
    assert all(now - created[i] <= timedelta(days=30) for i in daily)
    assert len({created[i].date() for i in daily}) == len(daily)  # one per day
    assert len(daily) == 30
    # The kept one of each day is its newest.
    for i in daily:
        same_day = [v for v in versions if created[v.id].date() == created[i].date()]
        assert created[i] == max(created[v.id] for v in same_day)
    assert {118, 120} <= keep and 999 not in keep


def test_policy_validation():
    with pytest.raises(ValueError, match="parents"):
        V.RetentionPolicy(parents=-1)


# -- commit path ----------------------------------------------------------------------------------


def test_commit_writes_version_refit_row_and_pointer_together(store):
    profile = store.ensure_profile()
    first = _commit(store, profile.id, 0)
    second = _commit(store, profile.id, 1)
    assert store.get_profile_by_id(profile.id).current_version_id == second.id
    assert second.parent_id == first.id
    rows = {r.new_version_id: r for r in store.list_refits(profile.id)}
    assert rows[second.id].status == "committed" and rows[first.id].status == "committed"


def test_commit_prunes_by_policy_and_never_an_import_undo_target(store):
    profile = store.ensure_profile()
    early = _commit(store, profile.id, 0)
    store.add_import(profile.id, file_sha256="f" * 64, memory_version_before=early.id)
    for i in range(1, 30):
        _commit(store, profile.id, i)
    kept = [v.id for v in store.list_memory_versions(profile.id)]
    current = store.get_profile_by_id(profile.id).current_version_id
    # current + 5 ancestors + the import's version (all made today: "today" is one of them).
    assert early.id in kept and current in kept
    assert len(kept) == 7


@pytest.mark.parametrize("change", ["rollback", "memory_off", "source_excluded", "source_deleted"])
def test_commit_refuses_when_the_world_moved_and_writes_nothing(store, change):
    profile = store.ensure_profile()
    conv = store.create_conversation(profile.id, "a chat")
    store.add_message(conv.id, "user", "hello")
    v1 = _commit(store, profile.id, 0)
    v2 = _commit(store, profile.id, 1)
    refit_id = store.start_refit(profile.id, v2.id)
    if change == "rollback":
        store.set_current_version(profile.id, v1.id)
    elif change == "memory_off":
        store.set_memory_enabled(profile.id, False)
    elif change == "source_excluded":
        store.set_conversation_excluded(conv.id, True)
    else:
        store.delete_conversation(conv.id)
    before = [v.id for v in store.list_memory_versions(profile.id)]
    blob = V.VersionBlob(
        tensors=_blob(9),
        backbone="fake",
        projector_sha256=None,
        config_json=None,
        train_loss=None,
        heldout_loss=0.1,
        trained_through_message_id=None,
        reason="x",
        sources=frozenset({conv.id}),
    )
    with pytest.raises(V.StaleRefit):
        V.commit_version(store, profile.id, refit_id=refit_id, base_version_id=v2.id, blob=blob)
    assert [v.id for v in store.list_memory_versions(profile.id)] == before
    assert next(r for r in store.list_refits(profile.id) if r.id == refit_id).status == "running"


# -- rollback and forget ---------------------------------------------------------------------------


def test_rollback_moves_pointer_and_is_audited(store):
    profile = store.ensure_profile()
    v1, v2 = _commit(store, profile.id, 0), _commit(store, profile.id, 1)
    assert V.rollback(store, profile.id, v1.id) == (v2.id, v1.id)
    assert store.get_profile_by_id(profile.id).current_version_id == v1.id
    assert store.list_audit(profile.id)[-1].action == "memory.rollback"
    other = store.create_profile("other")
    with pytest.raises(NotFound):
        V.rollback(store, other.id, v1.id)


def test_forget_returns_to_the_version_before_and_deletes_those_that_saw_it(store):
    profile = store.ensure_profile()
    old = store.create_conversation(profile.id, "old")
    store.add_message(old.id, "user", "old news")
    clean = _commit(store, profile.id, 0, through=store.last_message_id(profile.id))
    secret = store.create_conversation(profile.id, "secret")
    first = store.add_message(secret.id, "user", "my secret").id
    saw1 = _commit(store, profile.id, 1, through=first)
    store.add_import(profile.id, file_sha256="e" * 64, memory_version_before=saw1.id)
    saw2 = _commit(store, profile.id, 2, through=first)
    report = V.forget_conversation(store, profile.id, secret.id)
    assert report.previous_version_id == saw2.id
    assert report.restored_version_id == clean.id
    assert report.deleted_version_ids == (saw2.id,)
    assert report.kept_version_ids == (saw1.id,)  # an import's undo still needs it
    assert store.get_profile_by_id(profile.id).current_version_id == clean.id
    assert store.get_conversation(secret.id).exclude_from_memory
    assert [m.content for m in store.messages(secret.id)] == ["my secret"]  # chat kept
    assert {v.id for v in store.list_memory_versions(profile.id)} == {clean.id, saw1.id}
    detail = json.loads(store.list_audit(profile.id)[-1].detail)
    assert detail == {"conversation": secret.id, "from": saw2.id, "to": clean.id, "deleted": 1}


def test_forget_with_no_clean_version_leaves_no_memory(store):
    profile = store.ensure_profile()
    conv = store.create_conversation(profile.id, "only")
    first = store.add_message(conv.id, "user", "hi").id
    _commit(store, profile.id, 0, through=first)
    report = V.forget_conversation(store, profile.id, conv.id)
    assert report.restored_version_id is None
    assert store.get_profile_by_id(profile.id).current_version_id is None
    assert store.list_memory_versions(profile.id) == []


def test_forget_refuses_another_profiles_conversation(store):
    profile = store.ensure_profile()
    other = store.create_profile("other")
    conv = store.create_conversation(other.id, "theirs")
    with pytest.raises(NotFound):
        V.forget_conversation(store, profile.id, conv.id)
    assert not store.get_conversation(conv.id).exclude_from_memory


# -- R18: the database does not grow with the number of refits -------------------------------------


def _db_bytes(store: Store) -> int:
    return store._scalar("PRAGMA page_count") * store._scalar("PRAGMA page_size")


def _growth(
    store: Store,
    steady_after: int,
    total: int,
    size: int,
    policy: V.RetentionPolicy = V.DEFAULT_POLICY,
) -> tuple[int, int]:
    profile = store.ensure_profile()
    conv = store.create_conversation(profile.id, "c")
    store.add_message(conv.id, "user", "x")
    for i in range(steady_after):
        _commit(store, profile.id, i, size=size, policy=policy)
    steady = _db_bytes(store)
    for i in range(steady_after, total):
        _commit(store, profile.id, i, size=size, policy=policy)
    assert len(store.list_memory_versions(profile.id)) <= policy.parents + 2
    assert len(store.list_refits(profile.id)) <= policy.refit_rows
    return steady, _db_bytes(store)


def test_db_size_stays_bounded_over_many_refits(store):
    # A short refit-row window reaches the steady state fast; then 3x as many refits again.
    policy = V.RetentionPolicy(refit_rows=10)
    steady, final = _growth(store, 15, 60, size=4096, policy=policy)
    assert final < 2 * steady, (steady, final)


@pytest.mark.slow
def test_db_size_stays_bounded_over_1000_refits(store):
    # Steady state once the default refit-row window (100) is full; SmolLM2-size slot blobs.
    steady, final = _growth(store, 120, 1000, size=18_000)
    assert final < 2 * steady, (steady, final)
