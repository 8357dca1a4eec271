"""Every `lpm` command answers --help, and library errors become one line with exit 2."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from lpm_local.cli import main


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _all_commands(command, path)


COMMAND_PATHS = list(_all_commands(main))


def test_the_cli_has_the_foundation_commands():
    names = {path[0] for path in COMMAND_PATHS}
    assert {"ask", "chat", "models", "doctor", "paths"} <= names


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    # The first line of the help is a real sentence, not click's empty default.
    assert main.get_command(click.Context(main), path[0]).get_short_help_str().strip()


def test_top_level_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("ask", "chat", "doctor"):
        assert name in result.output


def test_library_error_is_one_line_exit_2(monkeypatch):
    from lpm_local.errors import ModelNotAvailable

    def refuse(*args, **kwargs):
        raise ModelNotAvailable("model 'nope' is not available.\nRun `lpm models` to see which are")

    monkeypatch.setattr("lpm_local.chat.assistant.open_assistant", refuse)
    result = CliRunner().invoke(main, ["ask", "hello", "--model", "nope"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["Error: model 'nope' is not available. Run `lpm models` to see which are"]
