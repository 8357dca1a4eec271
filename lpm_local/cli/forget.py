"""`lpm forget CONVERSATION`: take one chat out of the memory, and refit from the rest.

It loads the backbone the memory was fitted for (or ``--model``) to refit in the foreground, as
`lpm memory refit` does, and shares its options and helpers.
"""

from __future__ import annotations

import click

from lpm_local.cli.base import open_profile, profile_option
from lpm_local.cli.memory import (
    foreground_refit,
    load_frozen,
    model_option,
    quantize_option,
)


@click.command()
@click.argument("conversation", type=int)
@click.option(
    "--later",
    is_flag=True,
    help="Do not refit now; leave a request for the app (or `lpm memory refit`).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@profile_option
@model_option
@quantize_option
def forget(
    conversation: int,
    later: bool,
    yes: bool,
    profile_name: str | None,
    model: str | None,
    quantize: str | None,
) -> None:
    """Make the memory forget CONVERSATION (an id): exclude it, return to the memory from
    before it was learned, and refit from the rest. The chat itself is kept."""
    from lpm_local.memory.versions import forget_conversation

    store, profile = open_profile(profile_name)
    with store:
        chat = store.get_conversation(conversation)
        if not yes:
            click.confirm(
                f"Forget conversation #{chat.id} {chat.title or ''!r} from memory "
                "(versions that learned from it are deleted)?",
                abort=True,
            )
        report = forget_conversation(store, profile.id, conversation)
        click.echo(
            f"conversation #{report.conversation_id} {report.title or ''!r} is excluded "
            "from memory (the chat is kept)"
        )
        click.echo(forget_line(report))
        relearn(store, profile, later=later, model=model, quantize=quantize)


def relearn(store, profile, *, later: bool, model: str | None, quantize: str | None) -> None:
    """After a forget: refit the remaining history now, or leave a request for the app.

    `lpm forget` and `lpm chats delete` share this, so both leave the memory in the same
    state: refit without the conversation, or a pending request when memory is off, ``later``
    was asked for, or another process is refitting.
    """
    from lpm_local.memory import requests
    from lpm_local.memory.scheduler import RefitBusy

    if later or not profile.memory_enabled:
        requests.request_refit(store, profile.id, "forget")
        click.echo("a refit is requested: it runs in the open app or with `lpm memory refit`")
        return
    frozen = load_frozen(store, store.get_profile_by_id(profile.id), model, quantize)
    try:
        outcome = foreground_refit(store, frozen, profile.id, "forget")
    except RefitBusy as busy:
        requests.request_refit(store, profile.id, "forget")
        click.echo(f"{busy}; a refit is requested instead")
        return
    click.echo(f"refit of the remaining history: {outcome.summary()}")


def forget_line(report) -> str:
    """One line on what a forget did to the memory versions (shared with `lpm chats delete`)."""
    moved = (
        f"memory went back from version #{report.previous_version_id} to "
        f"#{report.restored_version_id}"
        if report.restored_version_id
        else "the memory is empty until the next refit"
    )
    if report.previous_version_id == report.restored_version_id:
        moved = (
            "there is no memory yet"
            if report.previous_version_id is None
            else f"the current memory (#{report.previous_version_id}) never learned from it"
        )
    deleted = ", ".join(f"#{i}" for i in report.deleted_version_ids) or "none"
    line = f"{moved}; versions deleted because they learned from it: {deleted}"
    if report.kept_version_ids:
        kept = ", ".join(f"#{i}" for i in report.kept_version_ids)
        line += f" (kept {kept}: an import's undo restores them)"
    return line


COMMANDS = [forget]
