"""Profiles, app settings and the audit log: who the data belongs to, and what was done to it."""

from __future__ import annotations

import re

from lpm_local.errors import BadInput, NotFound
from lpm_local.storage.connection import StoreCore
from lpm_local.storage.records import AuditEntry, Profile, utc_now

DEFAULT_PROFILE = "default"
ACTIVE_PROFILE_KEY = "active_profile"

# Letters (any script), digits, '-', '_' and inner spaces: a name is shown in the TUI and typed
# on the command line, so no control characters, quotes or markup, and a bounded length.
_NAME = re.compile(r"[\w\- ]{1,64}")


def validate_profile_name(name: str) -> str:
    """Return ``name`` if it is an acceptable profile name, else raise ``BadInput``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name != name.strip():
        raise BadInput(
            f"invalid profile name {str(name)[:80]!r}",
            hint="use 1-64 letters, digits, '-', '_' or inner spaces",
        )
    return name


class ProfileQueries(StoreCore):
    # -- profiles ------------------------------------------------------------------------------

    def get_profile(self, name: str) -> Profile:
        return Profile.from_row(
            self._row("SELECT * FROM profiles WHERE name = ?", [name], f"profile {name!r}")
        )

    def get_profile_by_id(self, profile_id: int) -> Profile:
        return self._profile(profile_id)

    def list_profiles(self) -> list[Profile]:
        return [Profile.from_row(r) for r in self._rows("SELECT * FROM profiles ORDER BY name")]

    def create_profile(self, name: str) -> Profile:
        """Create a new profile; ``BadInput`` if the name is invalid or taken."""
        validate_profile_name(name)
        with self.transaction():
            if self._rows("SELECT 1 FROM profiles WHERE name = ?", [name]):
                raise BadInput(f"profile {name!r} already exists")
            self._insert("profiles", {"name": name, "created_at": utc_now()})
            return self.get_profile(name)

    def ensure_profile(self, name: str = DEFAULT_PROFILE) -> Profile:
        """The profile called ``name``, created if missing."""
        validate_profile_name(name)
        with self.transaction():
            self._write(
                "INSERT OR IGNORE INTO profiles (name, created_at) VALUES (?, ?)", [name, utc_now()]
            )
            return self.get_profile(name)

    def delete_profile(self, name: str) -> None:
        """Delete a profile and, by cascade, everything it owns, in one transaction.

        The freed pages are zeroed (``secure_delete``); a full wipe also runs ``vacuum()``.
        """
        with self.transaction():
            if self._write("DELETE FROM profiles WHERE name = ?", [name]).rowcount == 0:
                raise NotFound(f"profile {name!r} does not exist")
            if self.get_setting(ACTIVE_PROFILE_KEY) == name:
                self.set_setting(ACTIVE_PROFILE_KEY, None)

    def active_profile(self) -> Profile:
        """The profile named by the ``active_profile`` setting; "default" (created) if unset
        or if that profile no longer exists."""
        # Read first: listing profiles while another process imports must not queue for the
        # write gate; only a missing default needs the write transaction.
        with self._snapshot():
            profile = self._named_active_profile()
            if profile is not None:
                return profile
        with self.transaction():
            # Read again under the write gate: another process may have set it meanwhile.
            profile = self._named_active_profile()
            if profile is not None:
                return profile
            profile = self.ensure_profile(DEFAULT_PROFILE)
            self.set_setting(ACTIVE_PROFILE_KEY, profile.name)
            return profile

    def _named_active_profile(self) -> Profile | None:
        """The profile the ``active_profile`` setting names, or None (unset, or gone)."""
        name = self.get_setting(ACTIVE_PROFILE_KEY)
        if name is None:
            return None
        try:
            return self.get_profile(name)
        except NotFound:
            return None

    def set_active_profile(self, name: str) -> Profile:
        """Make an existing profile the active one (``NotFound`` otherwise)."""
        with self.transaction():
            profile = self.get_profile(name)
            self.set_setting(ACTIVE_PROFILE_KEY, name)
            return profile

    def set_memory_enabled(self, profile_id: int, enabled: bool) -> Profile:
        self._update_profile(profile_id, "memory_enabled", int(bool(enabled)))
        return self.get_profile_by_id(profile_id)

    def set_profile_note(self, profile_id: int, note: str | None) -> Profile:
        self._update_profile(profile_id, "note", note)
        return self.get_profile_by_id(profile_id)

    def _update_profile(self, profile_id: int, column: str, value: object) -> None:
        sql = f"UPDATE profiles SET {column} = ? WHERE id = ?"
        if self._write(sql, [value, profile_id]).rowcount == 0:
            raise NotFound(f"profile #{profile_id} does not exist")

    # -- settings ------------------------------------------------------------------------------

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        value = self._scalar("SELECT value FROM settings WHERE key = ?", [key])
        return default if value is None else value

    def set_setting(self, key: str, value: str | None) -> None:
        """Store a setting as text; ``None`` removes it."""
        if value is None:
            self._write("DELETE FROM settings WHERE key = ?", [key])
        else:
            self._write(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, str(value)],
            )

    # -- audit log -----------------------------------------------------------------------------

    def audit(self, profile_id: int | None, action: str, detail: str | None = None) -> int:
        """Record an event (import, wipe, rollback, ...); ``profile_id`` None for app-wide ones.

        Keep personal content out of ``detail``: counts and ids, not message text.
        """
        return self._insert(
            "audit", {"profile_id": profile_id, "at": utc_now(), "action": action, "detail": detail}
        )

    def list_audit(self, profile_id: int | None) -> list[AuditEntry]:
        """A profile's audit entries, oldest first (``None``: the app-wide entries)."""
        rows = self._rows("SELECT * FROM audit WHERE profile_id IS ? ORDER BY id", [profile_id])
        return [AuditEntry.from_row(r) for r in rows]
