"""Refit requests that outlive the process that made them.

`lpm import` (a short-lived CLI process) and the TUI's import both need "refit this profile
soon"; the process that owns a memory runtime (the chat) picks the request up. A request is a
row in ``settings`` so it is written in the same transaction as the change that caused it, and a
crash cannot lose it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from lpm_local.storage.records import utc_now

if TYPE_CHECKING:
    from lpm_local.storage.store import Store


def _key(profile_id: int) -> str:
    return f"refit_requested:{profile_id}"


def request_refit(store: Store, profile_id: int, reason: str) -> None:
    """Ask for a refit of ``profile_id``; a later request replaces an earlier one."""
    store.set_setting(_key(profile_id), json.dumps({"reason": reason, "at": utc_now()}))


def pending_refit(store: Store, profile_id: int) -> dict | None:
    """The outstanding request (``{"reason", "at"}``), or None."""
    value = store.get_setting(_key(profile_id))
    return json.loads(value) if value else None


def clear_refit_request(store: Store, profile_id: int) -> None:
    store.set_setting(_key(profile_id), None)


def clear_served_request(store: Store, profile_id: int, seen: dict) -> None:
    """Clear the request a finished refit served (``seen``, read when it started), unless a
    newer one replaced it meanwhile."""
    with store.transaction():
        if pending_refit(store, profile_id) == seen:
            clear_refit_request(store, profile_id)
