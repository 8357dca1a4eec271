"""Memory versions (the slots as safetensors bytes) and the refits that produce them.

A version is immutable once written; "the memory" of a profile is whichever version
``profiles.current_version_id`` points at. Writing a version and moving that pointer happen in one
transaction, so a crash leaves the old memory or the new one, never a mix, and rolling back is just
moving the pointer. This module stores bytes and never parses them: decoding the safetensors (shape,
dtype, finiteness checks) belongs to the memory package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from lpm_local.errors import BadInput, CorruptDatabase, NotFound
from lpm_local.storage.connection import StoreCore
from lpm_local.storage.records import REFIT_STATUSES, MemoryVersion, Profile, RefitRecord, utc_now

# length() of a BLOB is read from its header, without loading the bytes.
_VERSION_COLUMNS = (
    "id, profile_id, parent_id, created_at, backbone, projector_sha256, config_json, sha256, "
    "length(tensors) AS n_bytes, train_loss, heldout_loss, trained_through_message_id, reason"
)


class MemoryQueries(StoreCore):
    # -- memory versions -----------------------------------------------------------------------

    def add_memory_version(
        self,
        profile_id: int,
        *,
        tensors: bytes,
        backbone: str | None,
        projector_sha256: str | None,
        config_json: str | None,
        train_loss: float | None = None,
        heldout_loss: float | None = None,
        parent_id: int | None = None,
        trained_through_message_id: int | None = None,
        reason: str | None = None,
        make_current: bool = True,
    ) -> MemoryVersion:
        """Store a new version (its sha256 computed here) and, by default, make it current in
        the same transaction."""
        if not isinstance(tensors, (bytes, bytearray, memoryview)) or len(tensors) == 0:
            raise BadInput("memory tensors must be non-empty safetensors bytes")
        blob = bytes(tensors)
        with self.transaction():
            self._profile(profile_id)
            if parent_id is not None:
                self._version_of(profile_id, parent_id)
            version_id = self._insert(
                "memory_versions",
                {
                    "profile_id": profile_id,
                    "parent_id": parent_id,
                    "created_at": utc_now(),
                    "backbone": backbone,
                    "projector_sha256": projector_sha256,
                    "config_json": config_json,
                    "tensors": blob,
                    "sha256": hashlib.sha256(blob).hexdigest(),
                    "train_loss": train_loss,
                    "heldout_loss": heldout_loss,
                    "trained_through_message_id": trained_through_message_id,
                    "reason": reason,
                },
            )
            if make_current:
                self.set_current_version(profile_id, version_id)
            return self.get_memory_version(version_id)

    def get_memory_version(self, version_id: int, *, with_tensors: bool = True) -> MemoryVersion:
        """A version; with its bytes (checked against the stored sha256) unless told not to."""
        columns = _VERSION_COLUMNS + (", tensors" if with_tensors else "")
        row = self._row(
            f"SELECT {columns} FROM memory_versions WHERE id = ?",
            [version_id],
            f"memory version #{version_id}",
        )
        version = MemoryVersion.from_row(row)
        if version.tensors is not None:
            if hashlib.sha256(version.tensors).hexdigest() != version.sha256:
                raise CorruptDatabase(
                    f"{self.path}: memory version #{version_id} of profile #{version.profile_id} "
                    "fails its sha256 check; roll back to an earlier version or forget the memory"
                )
        return version

    def current_memory_version(self, profile_id: int) -> MemoryVersion | None:
        """The profile's current memory, sha256-verified; ``None`` if it has none yet."""
        with self._snapshot():
            profile = self._profile(profile_id)
            if profile.current_version_id is None:
                return None
            return self.get_memory_version(profile.current_version_id)

    def list_memory_versions(self, profile_id: int) -> list[MemoryVersion]:
        """A profile's versions, oldest first, without their bytes (``tensors`` is None)."""
        sql = f"SELECT {_VERSION_COLUMNS} FROM memory_versions WHERE profile_id = ? ORDER BY id"
        rows = self._rows(sql, [profile_id])
        return [MemoryVersion.from_row(r) for r in rows]

    def set_current_version(self, profile_id: int, version_id: int | None) -> Profile:
        """Point the profile at one of its own versions (rollback); ``None``: no memory."""
        with self.transaction():
            self._profile(profile_id)
            if version_id is not None:
                self._version_of(profile_id, version_id)
            self._write(
                "UPDATE profiles SET current_version_id = ? WHERE id = ?", [version_id, profile_id]
            )
            return self._profile(profile_id)

    def delete_memory_versions(self, version_ids: Iterable[int]) -> int:
        """Delete versions (pruning, forgetting); returns how many existed.

        A profile whose current version goes has no memory until the next refit; children of a
        deleted version keep their bytes and lose only the parent link (``ON DELETE SET NULL``).
        """
        ids = list(version_ids)
        deleted = 0
        with self.transaction():
            for version_id in ids:
                sql = "DELETE FROM memory_versions WHERE id = ?"
                deleted += self._write(sql, [version_id]).rowcount
        return deleted

    # -- refits --------------------------------------------------------------------------------

    def start_refit(self, profile_id: int, base_version_id: int | None = None) -> int:
        """Record a refit as 'running' and return its id; a crash leaves the row visible."""
        with self.transaction():
            self._profile(profile_id)
            return self._insert(
                "refits",
                {
                    "profile_id": profile_id,
                    "started_at": utc_now(),
                    "status": "running",
                    "base_version_id": base_version_id,
                },
            )

    def finish_refit(
        self,
        refit_id: int,
        status: str,
        *,
        new_version_id: int | None = None,
        steps: int | None = None,
        detail: str | None = None,
    ) -> RefitRecord:
        if status not in REFIT_STATUSES or status == "running":
            raise BadInput(f"invalid refit status {status!r}")
        with self.transaction():
            cursor = self._write(
                "UPDATE refits SET finished_at = ?, status = ?, new_version_id = ?, steps = ?, "
                "detail = ? WHERE id = ?",
                [utc_now(), status, new_version_id, steps, detail, refit_id],
            )
            if cursor.rowcount == 0:
                raise NotFound(f"refit #{refit_id} does not exist")
            row = self._rows("SELECT * FROM refits WHERE id = ?", [refit_id])[0]
            return RefitRecord.from_row(row)

    def list_refits(self, profile_id: int) -> list[RefitRecord]:
        """A profile's refits, newest first."""
        sql = "SELECT * FROM refits WHERE profile_id = ? ORDER BY id DESC"
        rows = self._rows(sql, [profile_id])
        return [RefitRecord.from_row(r) for r in rows]

    # -- helpers -------------------------------------------------------------------------------

    def _version_of(self, profile_id: int, version_id: int) -> None:
        """``NotFound`` unless ``version_id`` is a version of this profile."""
        sql = "SELECT 1 FROM memory_versions WHERE id = ? AND profile_id = ?"
        if not self._rows(sql, [version_id, profile_id]):
            raise NotFound(f"memory version #{version_id} of profile #{profile_id} does not exist")
