"""The README's two set-up commands are the ones CI runs and the ones a user types."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup)


def test_readme_shows_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    chat, tests = commands
    assert chat.endswith("lpm chat")
    assert tests.endswith("python -m pytest")
    for command in commands:
        # The CPU wheel must be pinned in the install path (an unpinned torch pulls CUDA).
        assert "torch==2.13.0" in command


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
