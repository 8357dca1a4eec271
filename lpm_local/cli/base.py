"""Shared pieces of the CLI: the error edge, common options and progress rendering."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator

import click

from lpm_local.errors import LpmError, visible

# Exit code for anything the user can fix (bad input, missing model, locked database): the same
# code click uses for usage errors, so scripts can tell "you asked wrong" from "it crashed" (1).
USER_ERROR_EXIT = 2


class LpmUserError(click.ClickException):
    exit_code = USER_ERROR_EXIT

    def format_message(self) -> str:
        # One line, whatever the library wrote: a person reads it, a script greps it. Messages
        # carry untrusted names (files, titles): escapes in them are shown, never sent.
        return visible(" ".join(self.message.split()))


class LpmGroup(click.Group):
    """A click group that turns library errors into one line and exit 2."""

    def invoke(self, ctx: click.Context):
        from lpm_local import locations
        from lpm_local.storage.connection import set_wait_notice
        from lpm_local.storage.disk_errors import storage_error

        # A command that has to wait for another process's import says so once, on stderr.
        set_wait_notice(lambda line: click.echo(line, err=True))
        try:
            return super().invoke(ctx)
        except LpmError as error:
            raise LpmUserError(str(error)) from error
        except (sqlite3.OperationalError, OSError) as error:
            # A full disk (or size limit) anywhere below: one line with advice, not a traceback.
            failed = storage_error(error, locations.data_dir())
            if failed is None:
                raise
            raise LpmUserError(str(failed)) from error
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


ProgressCallback = Callable[[str, "float | None"], None]


def stderr_progress(prefix: str = "") -> ProgressCallback:
    """A progress callback that draws one updating line on stderr (plain lines if not a tty).

    Long work (model conversion, import, refit, eval) reports ``(stage, fraction or None)``;
    stdout stays clean for the answer itself so ``lpm ask ... > file`` works.
    """
    is_tty = sys.stderr.isatty()
    last_line, last_stage = [""], [""]

    def report(stage: str, fraction: float | None = None) -> None:
        text = f"{prefix}{stage}" + (f" {fraction:5.0%}" if fraction is not None else "")
        if is_tty:
            if text != last_line[0]:
                click.echo(f"\r\033[K{text}", err=True, nl=False)
            last_line[0] = text
        elif stage != last_stage[0]:
            # A log file or a pipe gets one line per stage, not one per percent.
            click.echo(f"{prefix}{stage}", err=True)
        last_stage[0] = stage

    return report


def finish_progress_line() -> None:
    if sys.stderr.isatty():
        click.echo("\r\033[K", err=True, nl=False)


def load_with_progress(model: str | None, quantize: str | None, device: str | None, prefix: str):
    """``load_backbone`` with its progress on stderr under ``prefix`` (e.g. "eval: ")."""
    from lpm_local.backbones.loader import load_backbone

    backbone = load_backbone(
        model, quantize=quantize, device=device, progress=stderr_progress(prefix)
    )
    finish_progress_line()
    return backbone


yes_option = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, "float | None"], None]]:
    """A rich progress bar on stderr, fed by the library's ``(stage, fraction)`` callbacks.

    Stages carry file names, which are untrusted text: they are shown with markup off.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    # Not a terminal (a pipe, a log, a test): no bar at all, the summary says it all.
    hidden = not console.is_terminal
    with Progress(*columns, console=console, transient=True, disable=hidden) as bar:
        task = bar.add_task(description, total=1.0)

        def report(stage: str, fraction: float | None = None) -> None:
            if fraction is None:
                bar.update(task, description=stage)
            else:
                bar.update(task, description=stage, completed=min(max(fraction, 0.0), 1.0))

        yield report


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def echo_json(payload: object) -> None:
    """``--json`` output: indented, non-ASCII kept as is (titles are people's own words)."""
    import json

    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


# `--profile NAME` of every command that acts on one existing profile, the active one by default
# (``open_profile`` opens it). `memory wipe`, `memory import` and `serve` have their own, as
# their --profile means something else: what to wipe, where to restore (default: the profile
# named in the bundle), and the profile requests use when they name none.
profile_option = click.option(
    "--profile",
    "profile_name",
    metavar="NAME",
    default=None,
    help="Act on this profile (default: the active one).",
)


def open_profile(profile_name: str | None):
    """(an open ``Store``, the named or the active profile); the store is closed on failure."""
    from lpm_local.storage.store import Store

    store = Store.open()
    try:
        profile = store.get_profile(profile_name) if profile_name else store.active_profile()
    except BaseException:
        store.close()
        raise
    return store, profile
