"""`lpm chats list|show|export|rename|delete`: find, read and take out your conversations.

None of these load a model, except `delete`, which refits the memory without the deleted chat
(as `lpm forget` does) when the memory had learned from it. Exports are written to a 0600 file
through a temp file and a rename, so a crash never leaves half an export behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lpm_local import locations
from lpm_local.cli.base import LpmGroup, open_profile, profile_option
from lpm_local.data.chat_export import FORMATS, chat_dict
from lpm_local.errors import BadInput


def _chat_id(text: str) -> int:
    value = text.strip().lstrip("#")
    if not value.isdigit():
        raise BadInput(f"not a chat id: {text[:40]!r}", hint="use a number from `lpm chats list`")
    return int(value)


def _chat(store, profile, text: str):
    """The conversation with id ``text``, if it belongs to ``profile``."""
    from lpm_local.errors import NotFound

    chat = store.get_conversation(_chat_id(text))
    if chat.profile_id != profile.id:
        raise NotFound(f"chat #{chat.id} does not exist in profile {profile.name!r}")
    return chat


def _when(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") if stamp else "-"


def _flags(chat) -> list[str]:
    flags = []
    if chat.import_id is not None:
        flags.append("imported")
    if chat.exclude_from_memory:
        flags.append("not learned")
    return flags


@click.group(cls=LpmGroup)
def chats() -> None:
    """Your conversations: list and search them, read, export, rename or delete one.

    Ids (`#12`) are the ones `lpm forget`, `lpm chats show` and `lpm ask --chat` take.
    """


@chats.command("list")
@click.option(
    "-n",
    "limit",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Show the N most recent (0: all).",
)
@click.option(
    "-q",
    "query",
    metavar="TEXT",
    default=None,
    help="Only chats whose title or messages contain TEXT (any case).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of the table.")
@profile_option
def list_command(limit: int, query: str | None, as_json: bool, profile_name: str | None) -> None:
    """List your chats, most recent first, with their ids."""
    store, profile = open_profile(profile_name)
    with store:
        if query is not None and query.strip():
            found = store.search_conversations(profile.id, query)
        else:
            found = store.list_conversations(profile.id)
    total = len(found)
    shown = found[:limit] if limit else found
    if as_json:
        click.echo(json.dumps([chat_dict(c) for c in shown], indent=2, ensure_ascii=False))
        return
    if not shown:
        click.echo("no chats match" if query else "no chats yet: `lpm chat`, or `lpm import FILE`")
        return
    click.echo(f"{'id':>6}  {'updated':<16}  {'msgs':>5}  title")
    for chat in shown:
        flags = _flags(chat)
        note = f"  ({', '.join(flags)})" if flags else ""
        click.echo(
            f"{'#' + str(chat.id):>6}  {_when(chat.updated_at):<16}  {chat.message_count:>5}  "
            f"{_one_line(chat.title or 'Untitled', 60)}{note}"
        )
    if total > len(shown):
        click.echo(f"... {total - len(shown)} more: `-n 0` shows all")


def _one_line(text: str, limit: int) -> str:
    """Titles are untrusted text: one line, control characters shown as spaces."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@chats.command("show")
@click.argument("chat_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The chat and its messages as JSON.")
@profile_option
def show_command(chat_id: str, as_json: bool, profile_name: str | None) -> None:
    """Print chat ID with all its messages."""
    store, profile = open_profile(profile_name)
    with store:
        chat = _chat(store, profile, chat_id)
        messages = store.messages(chat.id)
    if as_json:
        click.echo(json.dumps(chat_dict(chat, messages), indent=2, ensure_ascii=False))
        return
    flags = ", ".join([f"{chat.message_count} messages", *_flags(chat)])
    click.echo(f"#{chat.id} {_one_line(chat.title or 'Untitled', 80)}  ({flags})")
    for message in messages:
        click.echo(f"\n[{message.role}] {_when(message.created_at)}")
        click.echo(message.content)


@chats.command("export")
@click.argument("chat_id", metavar="ID", required=False)
@click.option("--all", "everything", is_flag=True, help="Every chat of the profile.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="md",
    show_default=True,
    help="Markdown to read, JSON or JSON Lines to process.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE (mode 0600) instead of stdout.",
)
@profile_option
def export_command(
    chat_id: str | None,
    everything: bool,
    fmt: str,
    output: Path | None,
    profile_name: str | None,
) -> None:
    """Export chat ID (or --all) as Markdown, JSON or JSON Lines.

    Markdown is `lpm import`'s transcript format, so one chat exported as md imports back;
    JSON Lines is one chat per line with OpenAI-style `messages`.
    """
    from lpm_local.data.chat_export import render

    if (chat_id is None) == (not everything):
        raise click.UsageError("give one chat ID, or --all")
    store, profile = open_profile(profile_name)
    with store:
        if everything:
            selected = list(reversed(store.list_conversations(profile.id)))  # oldest first
        else:
            selected = [_chat(store, profile, chat_id)]
        text = render([(c, store.messages(c.id)) for c in selected], fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    locations.write_private_atomic(output, text.encode("utf-8"))
    click.echo(f"wrote {len(selected)} chat(s) to {output} ({fmt})", err=True)


@chats.command("rename")
@click.argument("chat_id", metavar="ID")
@click.argument("title")
@profile_option
def rename_command(chat_id: str, title: str, profile_name: str | None) -> None:
    """Give chat ID a new TITLE."""
    title = _one_line(title, 200)
    if not title:
        raise BadInput("the title is empty", hint="write a few words after the id")
    store, profile = open_profile(profile_name)
    with store:
        chat = _chat(store, profile, chat_id)
        store.rename_conversation(chat.id, title)
    click.echo(f"#{chat.id} is now {title!r}")


@chats.command("delete")
@click.argument("chat_id", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--later",
    is_flag=True,
    help="Do not refit now; leave a request for the app (or `lpm memory refit`).",
)
@click.option(
    "--model",
    "model",
    metavar="NAME|PATH",
    default=None,
    help="Backbone for the refit (default: the one the memory was fitted for).",
)
@click.option(
    "--quantize",
    type=click.Choice(["nf4", "none"]),
    default=None,
    help="Override the backbone's default quantization.",
)
@profile_option
def delete_command(
    chat_id: str,
    yes: bool,
    later: bool,
    model: str | None,
    quantize: str | None,
    profile_name: str | None,
) -> None:
    """Delete chat ID and its messages, and make the memory forget it.

    The memory goes back to the version from before it learned the chat (as `lpm forget`
    does), the chat is deleted, then the rest of the history is refit, unless the memory never
    learned from the chat.
    """
    from lpm_local.cli.forget import forget_line, relearn
    from lpm_local.memory.versions import forget_conversation

    store, profile = open_profile(profile_name)
    with store:
        chat = _chat(store, profile, chat_id)
        if not yes:
            click.confirm(
                f"Delete chat #{chat.id} {_one_line(chat.title or 'Untitled', 60)!r} and its "
                f"{chat.message_count} messages, and forget it from memory?",
                abort=True,
            )
        # Forget first: it needs the chat's messages to tell which versions learned from it.
        report = forget_conversation(store, profile.id, chat.id)
        store.delete_conversation(chat.id)
        click.echo(f"chat #{chat.id} is deleted")
        learned = report.deleted_version_ids or (
            report.previous_version_id != report.restored_version_id
        )
        if not learned:
            click.echo("the memory had not learned from it: nothing to refit")
            return
        click.echo(forget_line(report))
        relearn(
            store, store.get_profile_by_id(profile.id), later=later, model=model, quantize=quantize
        )


COMMANDS = [chats]
