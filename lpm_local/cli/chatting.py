"""`lpm ask` and `lpm chat`: talking to the assistant from the terminal."""

from __future__ import annotations

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
    default=512,
    show_default=True,
    help="Longest reply, in tokens.",
)


def _open(model: str | None, quantize: str | None, *, background_refits: bool = True):
    from lpm_local.chat.assistant import open_assistant

    assistant = open_assistant(
        model, quantize=quantize, progress=stderr_progress(), background_refits=background_refits
    )
    finish_progress_line()
    if assistant.notice:
        click.echo(assistant.notice, err=True)  # stderr: `lpm ask` stdout stays the answer only
    return assistant


@click.command()
@click.argument("question")
@model_option
@quantize_option
@temporary_option
@max_tokens_option
def ask(
    question: str, model: str | None, quantize: str | None, temporary: bool, max_new_tokens: int
) -> None:
    """Ask one QUESTION and stream the answer to stdout."""
    if not question.strip():
        raise click.UsageError("the question is empty: write something after `lpm ask`")
    # One answer, then exit: refits belong to a process that stays (the chat, `lpm memory refit`).
    assistant = _open(model, quantize, background_refits=False)
    with assistant:
        session = assistant.new_session(temporary=temporary)
        for chunk in session.send(question, max_new_tokens=max_new_tokens):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        sys.stdout.write("\n")


@click.command()
@click.option("--plain", is_flag=True, help="Line-mode chat for terminals without a TUI.")
@model_option
@quantize_option
@temporary_option
@max_tokens_option
def chat(
    plain: bool, model: str | None, quantize: str | None, temporary: bool, max_new_tokens: int
) -> None:
    """Chat with the assistant (the terminal UI, or --plain for line mode)."""
    from lpm_local.storage.instance import InstanceLock

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
    model: str | None, quantize: str | None, temporary: bool, max_new_tokens: int
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
            _stream_reply(session, text, max_new_tokens)


def _stream_reply(session, text: str, max_new_tokens: int) -> None:
    """Print a reply as it streams; Ctrl-C stops this reply, not the chat.

    SIGINT only sets the cancel event while a reply streams, so the turn ends through the normal
    path: the partial reply is kept and stored like any other.
    """
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    sys.stdout.write("lpm> ")
    try:
        for chunk in session.send(text, cancel=cancel, max_new_tokens=max_new_tokens):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.stdout.write(" [stopped]\n" if cancel.is_set() else "\n")


COMMANDS = [ask, chat]
