"""Memory versions over time: committing a refit, pruning old versions, rollback and forgetting.

Everything here is database bookkeeping (no torch), so the crash tests can drive the very commit
path of a refit from a light subprocess.

- ``commit_version`` is the one place a refit's result becomes memory: the new version, the
  ``profiles.current_version_id`` pointer, the ``refits`` row and the pruning happen in one
  ``BEGIN IMMEDIATE`` transaction, so a kill leaves the old memory or the new one and never a
  version without its committed refit.
- A commit is refused (``StaleRefit``) when the world moved while the slots were being fitted: the
  user rolled back or forgot a conversation, switched memory off, or excluded/deleted a
  conversation the refit learned from. Fitting takes minutes; the user's word wins.
- ``versions_to_keep`` is the retention policy, so the database does not grow with every refit:
  the current version, its parent chain up to ``parents`` ancestors, every version an import may
  restore (``imports.memory_version_before``, needed for "undo import") and the newest version of
  each of the last ``daily_days`` days.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lpm_local.errors import NotFound
from lpm_local.storage.records import MemoryVersion
from lpm_local.storage.store import Store


@dataclass(frozen=True)
class RetentionPolicy:
    # The current version's ancestors kept for rollback: five refits back is ~40 user turns
    # at the default cadence, enough to undo a bad stretch of chat.
    parents: int = 5
    # One version per day for a month: "what did it know last week" stays answerable.
    daily_days: int = 30
    # Refit rows (status history) kept per profile; each is ~200 bytes, 100 is months of refits.
    refit_rows: int = 100

    def __post_init__(self) -> None:
        for name in ("parents", "daily_days", "refit_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"RetentionPolicy.{name} must be an int >= 0, got {value!r}")


DEFAULT_POLICY = RetentionPolicy()


class StaleRefit(Exception):
    """The refit's premise no longer holds (memory moved, memory off, a source excluded)."""


def versions_to_keep(
    versions: Sequence[MemoryVersion],
    current_id: int | None,
    protected: Iterable[int | None] = (),
    *,
    policy: RetentionPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> set[int]:
    """Ids of ``versions`` (one profile's) that the policy keeps; the others may be deleted."""
    by_id = {v.id: v for v in versions}
    keep: set[int] = set()
    node, hops = current_id, 0
    while node in by_id and hops <= policy.parents and node not in keep:
        keep.add(node)
        node, hops = by_id[node].parent_id, hops + 1
    keep |= {i for i in protected if i in by_id}
    now = now or datetime.now(UTC)
    horizon = now - timedelta(days=policy.daily_days)
    days: set[str] = set()
    for version in sorted(versions, key=lambda v: (v.created_at, v.id), reverse=True):
        created = datetime.fromisoformat(version.created_at)
        day = created.date().isoformat()
        if created >= horizon and day not in days:
            days.add(day)
            keep.add(version.id)
    return keep


def protected_versions(store: Store, profile_id: int) -> set[int]:
    """Versions an "undo import" may need to restore bit for bit: never pruned."""
    return {
        i.memory_version_before
        for i in store.list_imports(profile_id)
        if i.memory_version_before is not None
    }


def prune_versions(
    store: Store,
    profile_id: int,
    *,
    policy: RetentionPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> list[int]:
    """Delete what the policy does not keep (and old refit rows); returns the deleted ids."""
    with store.transaction():
        current = store.get_profile_by_id(profile_id).current_version_id
        versions = store.list_memory_versions(profile_id)
        keep = versions_to_keep(
            versions, current, protected_versions(store, profile_id), policy=policy, now=now
        )
        doomed = [v.id for v in versions if v.id not in keep]
        store.delete_memory_versions(doomed)
        # Old status rows: only the newest ``refit_rows`` of this profile stay. (A method on
        # Store would be the tidier home; this runs inside the transaction, which holds the
        # store's lock.)
        store.conn.execute(
            "DELETE FROM refits WHERE profile_id = ? AND id NOT IN (SELECT id FROM refits "
            "WHERE profile_id = ? ORDER BY id DESC LIMIT ?)",
            [profile_id, profile_id, policy.refit_rows],
        )
    return doomed


@dataclass(frozen=True)
class VersionBlob:
    """What a refit hands to ``commit_version``: the slots and how they were made."""

    tensors: bytes
    backbone: str | None
    projector_sha256: str | None
    config_json: str | None
    train_loss: float | None
    heldout_loss: float | None
    trained_through_message_id: int | None
    reason: str
    # Conversations whose windows the refit learned from: each must still be learnable.
    sources: frozenset[int] = field(default_factory=frozenset)


def commit_version(
    store: Store,
    profile_id: int,
    *,
    refit_id: int,
    base_version_id: int | None,
    blob: VersionBlob,
    steps: int | None = None,
    detail: str | None = None,
    policy: RetentionPolicy = DEFAULT_POLICY,
) -> MemoryVersion:
    """Make ``blob`` the profile's memory, finish the refit row and prune, in one transaction.

    Raises ``StaleRefit`` (and writes nothing) when the memory moved since ``base_version_id``
    was read, memory was switched off, or a source conversation left the learnable history.
    """
    with store.transaction():
        profile = store.get_profile_by_id(profile_id)
        if profile.current_version_id != base_version_id:
            raise StaleRefit(
                f"the memory changed during the refit (now version "
                f"#{profile.current_version_id}, the refit started from "
                f"#{base_version_id})"
            )
        if not profile.memory_enabled:
            raise StaleRefit("memory was switched off during the refit")
        _check_sources(store, profile_id, blob.sources)
        parent = base_version_id if _exists(store, profile_id, base_version_id) else None
        version = store.add_memory_version(
            profile_id,
            tensors=blob.tensors,
            backbone=blob.backbone,
            projector_sha256=blob.projector_sha256,
            config_json=blob.config_json,
            train_loss=blob.train_loss,
            heldout_loss=blob.heldout_loss,
            parent_id=parent,
            trained_through_message_id=blob.trained_through_message_id,
            reason=blob.reason,
            make_current=True,
        )
        store.finish_refit(
            refit_id, "committed", new_version_id=version.id, steps=steps, detail=detail
        )
        prune_versions(store, profile_id, policy=policy)
        return version


def _check_sources(store: Store, profile_id: int, sources: frozenset[int]) -> None:
    if not sources:
        return
    learnable = {c.id for c in store.list_conversations(profile_id) if not c.exclude_from_memory}
    gone = sorted(set(sources) - learnable)
    if gone:
        raise StaleRefit(f"conversation #{gone[0]} was excluded or deleted during the refit")


def _exists(store: Store, profile_id: int, version_id: int | None) -> bool:
    if version_id is None:
        return False
    try:
        return store.get_memory_version(version_id, with_tensors=False).profile_id == profile_id
    except NotFound:
        return False


def rollback(store: Store, profile_id: int, version_id: int) -> tuple[int | None, int]:
    """Make one of the profile's versions current; returns (previous, new). Audited."""
    with store.transaction():
        previous = store.get_profile_by_id(profile_id).current_version_id
        store.set_current_version(profile_id, version_id)
        store.audit(profile_id, "memory.rollback", f"version #{previous} -> #{version_id}")
    return previous, version_id


@dataclass(frozen=True)
class ForgetReport:
    """What ``forget_conversation`` did, for the confirmation the user reads."""

    conversation_id: int
    title: str | None
    previous_version_id: int | None
    restored_version_id: int | None  # None: no memory until the next refit
    deleted_version_ids: tuple[int, ...]
    kept_version_ids: tuple[int, ...]  # saw the conversation, kept for an import's undo


def forget_conversation(store: Store, profile_id: int, conversation_id: int) -> ForgetReport:
    """Exclude a conversation from memory and undo what the memory learned from it.

    A version "saw" the conversation when it was trained through a message id at or after the
    conversation's first message. The newest version that did not (along the current version's
    parent chain first, then any) becomes current, and the versions that saw it are deleted
    (``secure_delete`` zeroes their bytes), except those an import's undo must restore. Versions
    without ``trained_through_message_id`` (restored from a bundle) are not judged. All in one
    transaction; the chat itself is kept. A refit afterwards relearns the rest of the history.
    """
    with store.transaction():
        conversation = store.get_conversation(conversation_id)
        if conversation.profile_id != profile_id:
            raise NotFound(f"conversation #{conversation_id} does not exist in this profile")
        first = min((m.id for m in store.messages(conversation_id)), default=None)
        store.set_conversation_excluded(conversation_id, True)
        versions = store.list_memory_versions(profile_id)
        previous = store.get_profile_by_id(profile_id).current_version_id
        tainted = {
            v.id
            for v in versions
            if first is not None
            and v.trained_through_message_id is not None
            and v.trained_through_message_id >= first
        }
        restored = _newest_clean(versions, previous, tainted)
        protected = protected_versions(store, profile_id)
        doomed = sorted(tainted - protected)
        store.set_current_version(profile_id, restored)
        store.delete_memory_versions(doomed)
        store.audit(
            profile_id,
            "memory.forget",
            json.dumps(
                {
                    "conversation": conversation_id,
                    "from": previous,
                    "to": restored,
                    "deleted": len(doomed),
                }
            ),
        )
    return ForgetReport(
        conversation_id,
        conversation.title,
        previous,
        restored,
        tuple(doomed),
        tuple(sorted(tainted & protected)),
    )


def _newest_clean(
    versions: Sequence[MemoryVersion], current: int | None, tainted: set[int]
) -> int | None:
    by_id = {v.id: v for v in versions}
    node, seen = current, set()
    while node in by_id and node not in seen:
        if node not in tainted:
            return node
        seen.add(node)
        node = by_id[node].parent_id
    clean = [v.id for v in versions if v.id not in tainted]
    return max(clean) if clean else None
