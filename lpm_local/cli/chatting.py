"""`lpm ask` and `lpm chat`: talking to the assistant from the terminal."""

from __future__ import annotations

import io
import signal
import sys
import threading

import click

from lpm_local.cli.base import finish_progress_line, stderr_progress

model_option = click.option(
    "--model",
    "model",
    metavar="NAME|PATH",
    default=None,
    help="Backbone name from `lpm models`, or a local Hugging Face model directory.",
)
quantize_option = click.option(
    "--quantize",
    type=click.Choice(["nf4", "none"]),
    default=None,
    help="Override the backbone's default quantization (NF4 is the default on CUDA).",
)
temporary_option = click.option(
    "--temporary",
    is_flag=True,
    help="A temporary chat: not stored, not learned, not shaped by memory.",
)
max_tokens_option = click.option(
    "--max-new-tokens",
    type=click.IntRange(1, 8192),
    default=None,
    help="Longest reply, in tokens (default: the max_reply_tokens setting, 512).",
)


def _open(
    model: str | None,
    quantize: str | None,
    *,
    background_refits: bool = True,
):
    from lpm_local.chat.assistant import open_assistant

    assistant = open_assistant(
        model, quantize=quantize, progress=stderr_progress(), background_refits=background_refits
    )
    finish_progress_line()
    if assistant.notice:
        click.echo(assistant.notice, err=True)  # stderr: `lpm ask` stdout stays the answer only
    return assistant


def _piped_stdin() -> str | None:
    """What was piped or redirected into stdin, or None when stdin is a terminal or nothing.

    Only a pipe or a file is read: a terminal would wait for typing, and an inherited stdin
    that is neither (a daemon's /dev/null, a socket) must not make `lpm ask` hang.
    """
    import os
    import stat

    stream = sys.stdin
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        # Not a real file descriptor (a test runner's buffer): read whatever it holds.
        return stream.read() if not stream.isatty() else None
    if stream.isatty() or not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return None
    return stream.read()


def question_text(question: str | None) -> str:
    """The question from the argument, stdin, or both, like `cat notes.txt | llm "summarise"`.

    ``-`` reads the question from stdin alone; with a piped stdin and an argument, the piped
    text comes first and the argument (the instruction) after it, separated by a blank line.
    """
    if question == "-":
        piped = sys.stdin.read()
        question = None
    else:
        piped = _piped_stdin()
    parts = [p.strip("\n") for p in (piped, question) if p is not None and p.strip()]
    if not parts:
        raise click.UsageError(
            "the question is empty: write something after `lpm ask`, or pipe text into it"
        )
    return "\n\n".join(parts)


@click.command()
@click.argument("question", required=False)
@click.option("-c", "--continue", "continue_", is_flag=True, help="Continue your latest chat.")
@click.option(
    "--chat",
    "chat_id",
    type=int,
    metavar="ID",
    default=None,
    help="Continue chat ID (from `lpm chats list`).",
)
@click.option(
    "-s",
    "--system",
    "system",
    metavar="TEXT",
    default=None,
    help="System prompt for this question (default: the system_prompt setting).",
)
@model_option
@quantize_option
@temporary_option
@max_tokens_option
def ask(
    question: str | None,
    continue_: bool,
    chat_id: int | None,
    system: str | None,
    model: str | None,
    quantize: str | None,
    temporary: bool,
    max_new_tokens: int | None,
) -> None:
    """Ask one QUESTION and stream the answer to stdout.

    QUESTION may be `-` to read it from stdin; text piped into `lpm ask "instruction"` comes
    before the instruction (`cat notes.txt | lpm ask "summarise"`). The chat's id is printed
    on stderr, for `lpm ask --chat ID` to go on with it.
    """
    if continue_ and chat_id is not None:
        raise click.UsageError("use -c (the latest chat) or --chat ID, not both")
    if temporary and (continue_ or chat_id is not None):
        raise click.UsageError("a temporary question cannot continue a stored chat")
    text = question_text(question)
    # One answer, then exit: refits belong to a process that stays (the chat, `lpm memory refit`).
    assistant = _open(model, quantize, background_refits=False)
    with assistant:
        conversation = _conversation_to_continue(assistant, continue_, chat_id)
        session = assistant.new_session(
            temporary=temporary, conversation_id=conversation, system_prompt=system
        )
        for chunk in session.send(text, **assistant.reply_options(max_new_tokens)):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if session.conversation_id is not None and not temporary:
            click.echo(f"chat #{session.conversation_id}", err=True)


def _conversation_to_continue(assistant, continue_: bool, chat_id: int | None) -> int | None:
    from lpm_local.errors import NotFound

    store, profile = assistant.store, assistant.profile
    if chat_id is not None:
        chat = store.get_conversation(chat_id)
        if chat.profile_id != profile.id:
            raise NotFound(f"chat #{chat_id} does not exist in profile {profile.name!r}")
        return chat.id
    if continue_:
        latest = store.list_conversations(profile.id)
        if not latest:
            click.echo("no chat to continue yet: starting a new one", err=True)
            return None
        return latest[0].id
    return None


@click.command()
@click.option("--plain", is_flag=True, help="Line-mode chat for terminals without a TUI.")
@model_option
@quantize_option
@temporary_option
@max_tokens_option
def chat(
    plain: bool,
    model: str | None,
    quantize: str | None,
    temporary: bool,
    max_new_tokens: int | None,
) -> None:
    """Chat with the assistant (the terminal UI, or --plain for line mode)."""
    from lpm_local.settings import load_settings
    from lpm_local.storage.instance import InstanceLock

    load_settings()  # a broken settings file is one line here, before the screen changes
    with InstanceLock():
        if not plain:
            run_app = _terminal_ui()
            run_app(
                model=model, quantize=quantize, temporary=temporary, max_new_tokens=max_new_tokens
            )
            return
        _plain_chat(model, quantize, temporary, max_new_tokens)


# The library never imports the TUI (the TUI builds on the library, not the other way round):
# the TUI registers itself under this entry-point group and `lpm chat` looks it up by name.
FRONTENDS_GROUP = "lpm_local.frontends"


def _terminal_ui():
    from importlib.metadata import entry_points

    found = entry_points(group=FRONTENDS_GROUP, name="tui")
    if not found:
        raise click.ClickException(
            "the terminal UI is not installed with this lpm; "
            "reinstall lpm-local, or use `lpm chat --plain`"
        )
    return next(iter(found)).load()


def _plain_chat(
    model: str | None, quantize: str | None, temporary: bool, max_new_tokens: int | None
) -> None:
    assistant = _open(model, quantize)
    with assistant:
        session = assistant.new_session(temporary=temporary)
        mode = " (temporary: not stored, not learned)" if temporary else ""
        click.echo(
            f"lpm chat on {assistant.backbone.name}{mode}. Ctrl-C stops a reply, "
            "Ctrl-D or /quit leaves.",
            err=True,
        )
        while True:
            try:
                text = input("you> ")
            except EOFError:
                click.echo("", err=True)
                return
            if text.strip() in {"/quit", "/exit"}:
                return
            if not text.strip():
                continue
            _stream_reply(session, text, assistant.reply_options(max_new_tokens))


def _stream_reply(session, text: str, options: dict) -> None:
    """Print a reply as it streams; Ctrl-C stops this reply, not the chat.

    SIGINT only sets the cancel event while a reply streams, so the turn ends through the normal
    path: the partial reply is kept and stored like any other.
    """
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    sys.stdout.write("lpm> ")
    try:
        for chunk in session.send(text, cancel=cancel, **options):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stdout.write(" [stopped]\n" if cancel.is_set() else "\n")


COMMANDS = [ask, chat]
