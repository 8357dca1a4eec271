"""`lpm memory wipe`: forgetting beyond recovery, verified.

``MEMORY_COMMANDS`` are attached to the `lpm memory` group by ``lpm_local.cli``.
"""

from __future__ import annotations

import click

from lpm_local.cli.base import progress_bar, yes_option
from lpm_local.errors import LpmError
from lpm_local.storage.store import Store


@click.command("wipe")
@click.option(
    "--memory-only",
    is_flag=True,
    help="Forget the memory, keep the chats (of the active profile or --profile).",
)
@click.option(
    "--profile",
    metavar="NAME",
    default=None,
    help="Wipe this profile: everything of it, or only its memory with --memory-only.",
)
@click.option("--all", "everything", is_flag=True, help="Wipe every profile and setting.")
@yes_option
def wipe(memory_only: bool, profile: str | None, everything: bool, yes: bool) -> None:
    """Forget, beyond recovery: the memory, a whole profile, or everything.

    Deleted data is zeroed and the database rebuilt (VACUUM), bundles of it lying in the data
    dir are removed, and every file there is scanned to verify that nothing of it remains.
    """
    if everything and (memory_only or profile):
        raise click.UsageError("--all cannot be combined with --memory-only or --profile")
    if not (everything or memory_only or profile):
        raise click.UsageError("say what to wipe: --memory-only, --profile NAME or --all")
    kind = "all" if everything else "memory" if memory_only else "profile"
    confirmed_wipe(kind, profile, yes=yes, verb="Wipe", doing="wiping")


def confirmed_wipe(kind: str, profile: str | None, *, yes: bool, verb: str, doing: str) -> None:
    """Ask (unless ``yes``), wipe and verify; print the report; fail if it was not verified.
    The one path for `lpm memory wipe` and `lpm profile delete`."""
    from lpm_local.data.wipe import WipeScope, wipe_and_verify

    with Store.open() as store:
        scope = WipeScope.of(store, kind, profile)
        if not yes:
            click.confirm(f"{verb} {scope.describe()}? This cannot be undone", abort=True)
        with progress_bar(doing) as progress:
            report = wipe_and_verify(store, scope, progress=progress)
    for line in report.lines():
        click.echo(line)
    if not report.verified:
        raise LpmError("the wipe could not be verified: see the files listed above")


MEMORY_COMMANDS = [wipe]
