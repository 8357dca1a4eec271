"""`lpm profile list|create|switch|delete`: separate people, each with its own chats and memory.

Thin: each command opens the store, calls the library and prints names and counts (never
message text). Library errors (``LpmError``) become one line and exit 2 at the group's edge.
"""

from __future__ import annotations

import click

from lpm_local.cli.base import echo_json, json_option, yes_option
from lpm_local.storage.store import Store


@click.group("profile")
def profile() -> None:
    """Profiles: separate people (or personas), each with its own chats and memory."""


@profile.command("list")
@json_option
def profile_list(as_json: bool) -> None:
    """List profiles; * marks the active one."""
    with Store.open() as store:
        active = store.active_profile().name
        rows = [(p, len(store.list_conversations(p.id))) for p in store.list_profiles()]
    if as_json:
        echo_json(
            [
                {
                    "name": p.name,
                    "active": p.name == active,
                    "conversations": n_conversations,
                    "memory_enabled": bool(p.memory_enabled),
                    "current_version_id": p.current_version_id,
                }
                for p, n_conversations in rows
            ]
        )
        return
    for p, n_conversations in rows:
        mark = "*" if p.name == active else " "
        memory = f"memory v{p.current_version_id}" if p.current_version_id else "no memory yet"
        off = "" if p.memory_enabled else " (memory off)"
        click.echo(f"{mark} {p.name:<24} {n_conversations:>6,} conversations  {memory}{off}")


@profile.command("create")
@click.argument("name")
def profile_create(name: str) -> None:
    """Create profile NAME (it does not become active: see `lpm profile switch`)."""
    with Store.open() as store:
        created = store.create_profile(name)
    click.echo(f"created profile '{created.name}'; use it with `lpm profile switch {created.name}`")


@profile.command("switch")
@click.argument("name")
def profile_switch(name: str) -> None:
    """Make profile NAME the active one (chat, import and export use it)."""
    with Store.open() as store:
        store.set_active_profile(name)
    click.echo(f"active profile: '{name}'")


@profile.command("delete")
@click.argument("name")
@yes_option
def profile_delete(name: str, yes: bool) -> None:
    """Delete profile NAME with all its chats, memory and imports, beyond recovery."""
    from lpm_local.cli.wipe import confirmed_wipe

    confirmed_wipe("profile", name, yes=yes, verb="Delete", doing="deleting")


COMMANDS = [profile]
