"""`lpm import` and `lpm imports list|undo`: chat logs from other apps, and taking them back out.

Thin: each command opens the store, calls the library and prints names and counts (never
message text). Library errors (``LpmError``) become one line and exit 2 at the group's edge.
"""

from __future__ import annotations

import threading
from pathlib import Path

import click

from lpm_local.cli.base import (
    echo_json,
    json_option,
    open_profile,
    profile_option,
    progress_bar,
    yes_option,
)
from lpm_local.errors import LpmError, visible
from lpm_local.storage.store import Store

# -- lpm import ----------------------------------------------------------------------------------


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check the files and show what would be added.")
@profile_option
def import_(files: tuple[Path, ...], dry_run: bool, profile_name: str | None) -> None:
    """Import chat logs from other apps (format detected from the content).

    ChatGPT and Claude exports (conversations.json, shards or the .zip), Open WebUI, ShareGPT,
    OpenAI messages JSONL, oterm / elia / llm databases, Markdown or plain-text transcripts,
    and .lpm bundles. Each file is imported whole or not at all; the same file twice adds
    nothing; `lpm imports undo ID` takes an import back out.
    """
    from lpm_local.data.importing import import_files

    with Store.open() as store, progress_bar("importing") as progress:
        try:
            summary = import_files(
                store,
                files,
                profile=profile_name,
                dry_run=dry_run,
                progress=progress,
                cancel=threading.Event(),
            )
        except LpmError as error:
            completed = getattr(error, "completed", None)
            if completed is not None and completed.files:
                for line in completed.lines():
                    click.echo(line)
            raise
    for line in summary.lines():
        click.echo(line)
    if not dry_run and summary.messages:
        click.echo("the memory will learn from them at its next refit (in the chat)")


# -- lpm imports ---------------------------------------------------------------------------------


@click.group("imports")
def imports() -> None:
    """List past imports, or undo one (its chats go, the memory goes back to before it)."""


@imports.command("list")
@profile_option
@json_option
def imports_list(profile_name: str | None, as_json: bool) -> None:
    """List the imports of a profile, oldest first."""
    store, owner = open_profile(profile_name)
    with store:
        records = store.list_imports(owner.id)
    if as_json:
        echo_json(
            [
                {
                    "id": r.id,
                    "created_at": r.created_at,
                    "format": r.format,
                    "file_name": r.file_name,
                    "file_sha256": r.file_sha256,
                    "n_conversations": r.n_conversations,
                    "n_messages": r.n_messages,
                    "memory_version_before": r.memory_version_before,
                }
                for r in records
            ]
        )
        return
    if not records:
        click.echo(f"profile '{owner.name}' has no imports")
        return
    click.echo(f"{'id':>4}  {'imported at':<19}  {'format':<13} {'convs':>6} {'msgs':>8}  file")
    for r in records:
        click.echo(
            f"{r.id:>4}  {r.created_at[:19].replace('T', ' '):<19}  {r.format or '?':<13} "
            f"{r.n_conversations:>6,} {r.n_messages:>8,}  {visible(r.file_name or '')}"
        )


@imports.command("undo")
@click.argument("import_id", metavar="ID", type=int)
@yes_option
def imports_undo(import_id: int, yes: bool) -> None:
    """Remove import ID's chats and restore the memory from before it, bit for bit."""
    from lpm_local.data.importing import undo_import

    with Store.open() as store:
        record = store.get_import(import_id)
        if not yes:
            click.confirm(
                f"Remove import #{record.id} ({visible(record.file_name or '')}: "
                f"{record.n_conversations:,} "
                f"conversations, {record.n_messages:,} messages) and restore the memory from "
                "before it?",
                abort=True,
            )
        result = undo_import(store, import_id)
    click.echo(
        f"removed import #{result.import_id}: {result.conversations:,} conversations, "
        f"{result.messages:,} messages"
    )
    if result.notes_removed:
        parts = f"{result.notes_removed} part(s)"
        click.echo(f"removed what it had added to the profile note ({parts})")
    if result.memory_version is not None:
        click.echo(f"memory restored to version #{result.memory_version} (from before the import)")
    elif result.memory_restored:
        click.echo("there was no memory before the import: memory cleared")
    else:
        click.echo("the memory from before the import no longer exists: memory cleared")


COMMANDS = [import_, imports]
