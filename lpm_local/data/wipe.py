"""Wiping: forget a profile's memory (keep its chats), a whole profile, or everything.

What a wipe must achieve: no byte of the wiped data left in any file under the data dir (the
database, its journal, exports lying there), even if the process is killed half way; forgetting
only the memory keeps the chats. The steps:

1. commit an intent row in ``pending_wipes`` (migration ``m002_pending_wipes``);
2. in one transaction: sample a few of the values about to go (for the byte scan of step 5),
   count, delete (``secure_delete`` zeroes the cells and freed pages), check by counting that
   no row of the scope is left, and move the intent to 'vacuum';
3. remove ``.lpm`` bundles (and partial exports) of that scope lying under the data dir;
4. ``VACUUM``, so the file is rebuilt from live rows only (no free page, no slack space keeps
   anything), then delete the intent row;
5. (``verify_wiped``) scan every file under the data dir for the sampled values.

A kill -9 anywhere leaves the intent row; ``resume_pending_wipes(store)``, run right after
``Store.open``, finishes the job (redoing step 2 only if it never committed, so data added
after a completed delete is never touched).

Forgetting the memory keeps the chats; the next refit may learn from them again (the refit
scheduler decides; conversations can be excluded from memory one by one).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lpm_local import locations
from lpm_local.data.wipe_verify import Sample, remove_bundles, sample_values, scan_for_samples
from lpm_local.errors import NotFound, visible
from lpm_local.memory.requests import clear_refit_request
from lpm_local.storage.disk_errors import StorageFailed, storage_error
from lpm_local.storage.records import utc_now

if TYPE_CHECKING:
    from lpm_local.storage.store import Store

KINDS = ("memory", "profile", "all")
Progress = Callable[[str, "float | None"], None]

# Rows of each scope, counted before (the report) and after (must be 0) the delete.
# Each query takes the profile id as its only parameter when it has a '?'.
_BY_PROFILE = "SELECT count(*) FROM {} WHERE profile_id = ?"
_MESSAGE_IDS = (
    "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    " WHERE c.profile_id = ?"
)
_MESSAGES_OF = (
    "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id"
    " WHERE c.profile_id = ?"
)
_COUNTS: dict[str, dict[str, str]] = {
    "memory": {
        "memory versions": _BY_PROFILE.format("memory_versions"),
        "refits": _BY_PROFILE.format("refits"),
    },
    "profile": {
        "profiles": "SELECT count(*) FROM profiles WHERE id = ?",
        "conversations": _BY_PROFILE.format("conversations"),
        "messages": _MESSAGES_OF,
        "memory versions": _BY_PROFILE.format("memory_versions"),
        "imports": _BY_PROFILE.format("imports"),
        "refits": _BY_PROFILE.format("refits"),
        "audit entries": _BY_PROFILE.format("audit"),
    },
    "all": {
        name: f"SELECT count(*) FROM {table}"
        for name, table in (
            ("profiles", "profiles"),
            ("conversations", "conversations"),
            ("messages", "messages"),
            ("memory versions", "memory_versions"),
            ("imports", "imports"),
            ("refits", "refits"),
            ("audit entries", "audit"),
            ("settings", "settings"),
        )
    },
}


@dataclass(frozen=True)
class WipeScope:
    """What to wipe: ``kind`` "memory" or "profile" (of ``profile_id``, ``profile_name``), or
    "all"."""

    kind: str
    profile_id: int | None = None
    profile_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"WipeScope.kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "all") != (self.profile_id is None):
            raise ValueError(f"WipeScope {self.kind!r} needs a profile_id exactly when not 'all'")

    @classmethod
    def of(cls, store: Store, kind: str, profile: str | None = None) -> WipeScope:
        """The scope for ``kind`` over the named profile (default: the active one)."""
        if kind == "all":
            return cls("all")
        target = store.active_profile() if profile is None else store.get_profile(profile)
        return cls(kind, target.id, target.name)

    def describe(self) -> str:
        return {
            "memory": f"the memory of profile '{self.profile_name}' (its chats stay)",
            "profile": f"profile '{self.profile_name}' and everything it holds",
            "all": "every profile, chat, memory and setting",
        }[self.kind]


@dataclass
class WipeReport:
    scope: WipeScope
    deleted: dict[str, int]
    rows_left: int
    bundle_files: list[Path]
    seconds: float
    # Sampled deleted values: kept in memory only, for ``verify_wiped``; never printed.
    samples: list[Sample] = field(default_factory=list, repr=False)
    # Files in which a sample was still found; None until ``verify_wiped`` ran.
    leftovers: list[str] | None = None

    @property
    def verified(self) -> bool:
        """True once ``verify_wiped`` scanned every file and found none of the deleted values."""
        return self.leftovers == []

    def lines(self) -> list[str]:
        counts = ", ".join(f"{n:,} {what}" for what, n in self.deleted.items() if n) or "nothing"
        out = [f"wiped {self.scope.describe()}: {counts}"]
        if self.bundle_files:
            out.append(f"removed {len(self.bundle_files)} bundle file(s) under the data dir")
        out.append(f"rows of it left in the database: {self.rows_left}")
        if self.leftovers is not None:
            out.append(self._verification())
        out.append(f"took {self.seconds:.1f} s")
        return out

    def _verification(self) -> str:
        """What the byte scan showed, and what it could not show (nothing sampled)."""
        if self.leftovers:
            return "WARNING: sampled deleted values still found in: " + ", ".join(
                visible(name) for name in self.leftovers
            )
        texts = sum(s.kind == "text" for s in self.samples)
        blobs = len(self.samples) - texts
        if not self.samples:
            # Only values of 16+ varied bytes can be told apart from chance in a scan.
            return (
                "not verified by a byte scan: nothing deleted was long enough to sample "
                "(messages under 16 bytes or too repetitive, no memory blob); verified only that "
                "no row of it is left"
            )
        what = " and ".join(
            part
            for part in (
                f"{texts} message text{'s' * (texts != 1)}" if texts else "",
                f"{blobs} memory blob{'s' * (blobs != 1)}" if blobs else "",
            )
            if part
        )
        return (
            f"verified: none of {len(self.samples)} sampled deleted values ({what}) remains "
            "in any file under the data dir (a sample, not every byte)"
        )


def wipe(
    store: Store,
    scope: WipeScope,
    *,
    data_dir: Path | None = None,
    progress: Progress | None = None,
) -> WipeReport:
    """Wipe ``scope`` as described in the module docstring (steps 1-4); not in a transaction.

    ``data_dir`` is swept for bundles; default: the store's directory when it is the app's data
    dir (a database opened at another path never makes us touch its neighbours).
    """
    started = time.monotonic()
    with store.transaction():
        if scope.kind != "all":  # NotFound before anything is recorded
            store.get_profile_by_id(scope.profile_id)
        cursor = store.conn.execute(
            "INSERT INTO pending_wipes (kind, profile_id, profile_name, status, created_at) "
            "VALUES (?, ?, ?, 'pending', ?)",
            [scope.kind, scope.profile_id, scope.profile_name, utc_now()],
        )
    try:
        return _finish(
            store, cursor.lastrowid, _sweep_dir(store, data_dir), progress, started, scope
        )
    except (sqlite3.OperationalError, OSError) as error:
        failed = storage_error(error, store.path.parent)
        if failed is None:
            raise
        # The intent row is committed: the next open of the store finishes the wipe, and
        # nothing of the scope can be read before that.
        raise StorageFailed(
            f"the wipe of {scope.describe()} could not finish: {failed}. It is recorded and "
            "finishes the next time lpm opens with space free (e.g. `lpm profile list`)"
        ) from None


def resume_pending_wipes(store: Store, *, data_dir: Path | None = None) -> list[WipeReport]:
    """Finish wipes a killed process left. Call right after ``Store.open()``, before the
    store is shared with other threads.

    With nothing pending this is one read, outside any transaction: it never waits for the
    write gate, so opening the app is not held up by another process's long import.
    """
    if not _has_table(store, "pending_wipes"):
        return []
    rows = store._rows("SELECT id FROM pending_wipes ORDER BY id")  # waits out a writer
    sweep = _sweep_dir(store, data_dir)
    return [_finish(store, row[0], sweep, None, time.monotonic()) for row in rows]


def verify_wiped(store: Store, report: WipeReport, *, data_dir: Path | None = None) -> list[str]:
    """Scan every file under the data dir for the report's sampled values; fills and
    returns ``report.leftovers``. A value still present in rows outside the scope (the same
    file imported into two profiles) is not a leftover."""
    root = data_dir or store.path.parent
    report.leftovers = scan_for_samples(store, root, report.samples)
    return report.leftovers


def wipe_and_verify(
    store: Store,
    scope: WipeScope,
    *,
    data_dir: Path | None = None,
    progress: Progress | None = None,
) -> WipeReport:
    """The wipe every front end runs (`lpm memory wipe`, `lpm profile delete`, the TUI):
    ``wipe``, then ``verify_wiped``. The report's ``verified`` says whether the scan found
    nothing; when it did not, ``leftovers`` names the files and ``lines()`` says so."""
    report = wipe(store, scope, data_dir=data_dir, progress=progress)
    _say(progress, "verifying", None)
    verify_wiped(store, report, data_dir=data_dir)
    return report


def planned(store: Store, scope: WipeScope) -> dict[str, int]:
    """What ``wipe(scope)`` would delete now, per kind of row, counted the way the wipe counts
    its report (read only): a confirmation built from it names exactly what goes."""
    return _count(store, scope)


def _has_table(store: Store, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return bool(store._rows(sql, [name]))


def _sweep_dir(store: Store, data_dir: Path | None) -> Path | None:
    if data_dir is not None:
        return data_dir
    here = store.path.parent.resolve()
    return here if here == locations.data_dir().resolve() else None


def _finish(
    store: Store,
    intent_id: int,
    sweep: Path | None,
    progress: Progress | None,
    started: float,
    asked: WipeScope | None = None,
) -> WipeReport:
    _say(progress, "deleting", 0.0)
    with store.transaction():
        row = store.conn.execute(
            "SELECT kind, profile_id, profile_name, status FROM pending_wipes WHERE id = ?",
            [intent_id],
        ).fetchone()
        if row is None:  # another process (resuming it) finished it meanwhile
            return WipeReport(asked or WipeScope("all"), {}, 0, [], time.monotonic() - started)
        scope = WipeScope(row[0], row[1], row[2])
        deleted, samples, left = {}, [], 0
        if row[3] == "pending" and _still_there(store, scope):
            deleted, samples, left = _delete(store, scope)
        store.conn.execute("UPDATE pending_wipes SET status = 'vacuum' WHERE id = ?", [intent_id])
    _say(progress, "removing bundles", 0.4)
    removed = (
        remove_bundles(sweep, scope.kind, scope.profile_name, skip_prefix=store.path.name)
        if sweep
        else []
    )
    _say(progress, "vacuuming", 0.5)
    store.vacuum()
    with store.transaction():
        store.conn.execute("DELETE FROM pending_wipes WHERE id = ?", [intent_id])
    _say(progress, "done", 1.0)
    return WipeReport(scope, deleted, left, removed, time.monotonic() - started, samples)


def _still_there(store: Store, scope: WipeScope) -> bool:
    """False if the profile went (or its id now names another profile): nothing to delete."""
    if scope.kind == "all":
        return True
    try:
        return store.get_profile_by_id(scope.profile_id).name == scope.profile_name
    except NotFound:
        return False


def _delete(store: Store, scope: WipeScope) -> tuple[dict[str, int], list[Sample], int]:
    """Inside the caller's transaction: (rows deleted per kind, samples, rows left)."""
    before = _count(store, scope)
    samples = sample_values(store, scope.kind, scope.profile_id)
    if scope.kind == "memory":
        _forget_memory(store, scope.profile_id)
        store.audit(
            scope.profile_id,
            "wipe-memory",
            f"{before['memory versions']} memory versions, {before['refits']} refits",
        )
    elif scope.kind == "profile":
        store.delete_profile(scope.profile_name)
        clear_refit_request(store, scope.profile_id)
        store.audit(None, "wipe-profile", f"profile #{scope.profile_id}: " + _summary(before))
    else:
        for table in ("profiles", "settings", "audit"):  # profiles cascade to all the rest
            store.conn.execute(f"DELETE FROM {table}")
        store.audit(None, "wipe-all", _summary(before))
    after = _count(store, scope)
    if scope.kind == "all":
        after["audit entries"] -= 1  # the entry that records this wipe
    return before, samples, sum(after.values())


def _forget_memory(store: Store, profile_id: int) -> None:
    store.delete_memory_versions(v.id for v in store.list_memory_versions(profile_id))
    store.conn.execute("DELETE FROM refits WHERE profile_id = ?", [profile_id])
    if _has_table(store, "reply_attention"):  # which slots each reply read: memory, not chat
        store.conn.execute(
            f"DELETE FROM reply_attention WHERE message_id IN ({_MESSAGE_IDS})", [profile_id]
        )
    # Version ids are reused once the newest is deleted: an old import must not "restore" a
    # version made after this wipe (importing.undo_import then clears the memory instead).
    store.conn.execute(
        "UPDATE imports SET memory_version_before = NULL WHERE profile_id = ?", [profile_id]
    )
    clear_refit_request(store, profile_id)


def _count(store: Store, scope: WipeScope) -> dict[str, int]:
    params = [] if scope.kind == "all" else [scope.profile_id]
    queries = dict(_COUNTS[scope.kind])
    if scope.kind == "memory" and _has_table(store, "reply_attention"):
        queries["reply attention records"] = (
            f"SELECT count(*) FROM reply_attention WHERE message_id IN ({_MESSAGE_IDS})"
        )
    return {what: store.conn.execute(sql, params).fetchone()[0] for what, sql in queries.items()}


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.items())


def _say(progress: Progress | None, stage: str, fraction: float | None) -> None:
    if progress is not None:
        progress(stage, fraction)
