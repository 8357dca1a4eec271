"""The ``lpm`` command line: a thin shell over the library.

Each command group lives in its own module and registers itself on ``main``. Library errors
(``LpmError``) become one line on stderr and exit code 2 at this edge; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import click

from lpm_local import __version__
from lpm_local.cli.base import LpmGroup


@click.group(cls=LpmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lpm")
def main() -> None:
    """lpm-local: a private assistant that remembers you, on your own machine.

    Chat with `lpm chat`, ask one question with `lpm ask "..."`. Everything stays on this
    machine: see `lpm paths` for where.
    """


def _register() -> None:
    # Command modules import torch lazily, inside the commands, so `lpm --help` stays fast.
    from lpm_local.cli import (
        bench,
        bundles,
        chats,
        chatting,
        config,
        evaluation,
        forget,
        importing,
        info,
        memory,
        profiles,
        research,
        serve,
        wipe,
    )

    for module in (
        chatting,
        chats,
        importing,
        profiles,
        memory,
        forget,
        research,
        evaluation,
        bench,
        info,
        config,
        serve,
    ):
        for command in module.COMMANDS:
            main.add_command(command)
    # Export, restore and wipe have modules of their own but read as `lpm memory export|import|
    # wipe`: they act on the memory.
    for command in (*bundles.MEMORY_COMMANDS, *wipe.MEMORY_COMMANDS):
        memory.memory.add_command(command)


_register()
