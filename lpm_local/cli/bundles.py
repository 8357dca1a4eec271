"""`lpm memory export|import`: the memory (and, if asked, the chats) in an .lpm bundle.

``MEMORY_COMMANDS`` are attached to the `lpm memory` group by ``lpm_local.cli``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import click

from lpm_local.cli.base import profile_option, progress_bar
from lpm_local.errors import visible
from lpm_local.storage.store import Store


@click.command("export")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--with-history", is_flag=True, help="Include the chats (conversations.jsonl).")
@profile_option
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def export(file: Path, with_history: bool, profile_name: str | None, force: bool) -> None:
    """Save the memory to an .lpm bundle FILE (a zip, readable only by you)."""
    from lpm_local.data.bundle.export import export_bundle

    with Store.open() as store, progress_bar("exporting") as progress:
        result = export_bundle(
            store,
            file,
            profile=profile_name,
            with_history=with_history,
            overwrite=force,
            progress=progress,
            cancel=threading.Event(),
        )
    memory = (
        f"memory version #{result.memory_version}"
        if result.memory_version is not None
        else "no memory"
    )
    history = (
        f", {result.conversations:,} conversations, {result.messages:,} messages"
        if with_history
        else " (chats not included: --with-history adds them)"
    )
    click.echo(f"exported profile '{result.profile}': {memory}{history}")
    click.echo(f"wrote {result.path} ({result.n_bytes:,} bytes, mode 0600)")


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--profile",
    metavar="NAME",
    default=None,
    help="Restore into this profile (default: the one named in the bundle; created if missing).",
)
@click.option("--dry-run", is_flag=True, help="Check the bundle and show what would be restored.")
def import_(file: Path, profile: str | None, dry_run: bool) -> None:
    """Restore memory (and chats, if it has them) from an .lpm bundle FILE."""
    from lpm_local.data.bundle.restore import import_bundle

    with Store.open() as store, progress_bar("restoring") as progress:
        result = import_bundle(
            store,
            file,
            profile=profile,
            dry_run=dry_run,
            progress=progress,
            cancel=threading.Event(),
        )
    if result.status == "duplicate":
        click.echo(
            f"{visible(file.name)} was already restored into '{result.profile}' (import "
            f"#{result.import_id}): nothing added"
        )
        return
    chats = f"{result.conversations:,} conversations, {result.messages:,} messages"
    if dry_run:
        click.echo(f"would restore into profile '{result.profile}': memory, {chats}")
        return
    memory = (
        f"memory version #{result.memory_version} (backbone {visible(result.backbone or '?')})"
        if result.memory_version is not None
        else "no memory (the bundle has none)"
    )
    click.echo(f"restored into profile '{result.profile}': {memory}, {chats}")
    click.echo(f"undo with `lpm imports undo {result.import_id}`")


MEMORY_COMMANDS = [export, import_]
