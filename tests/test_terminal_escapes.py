"""Untrusted names reach the terminal as text, never as escape sequences (issue 15.8)."""

from __future__ import annotations

from click.testing import CliRunner

from lpm_local.cli import main
from lpm_local.errors import visible

EVIL = "evil\x1b[31mRED\x1b]0;owned\x07\u202e.txt"


def test_visible_shows_control_and_invisible_characters():
    assert visible(EVIL) == "evil\\x1b[31mRED\\x1b]0;owned\\x07\\u202e.txt"
    assert visible("café 🍞 – ok") == "café 🍞 – ok"  # printable text is left alone
    assert visible("a\nb\tc") == "a\\nb\\tc"


def _no_escapes(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, repr(text)


def test_errors_summaries_and_imports_list_escape_file_names(tmp_path):
    runner = CliRunner()
    bad = tmp_path / EVIL
    bad.write_text("not a chat log at all")
    refused = runner.invoke(main, ["import", str(bad)])
    assert refused.exit_code == 2
    _no_escapes(refused.output)
    assert "evil\\x1b[31mRED\\x1b]0;owned\\x07\\u202e.txt: not a recognised chat log" in (
        refused.output
    )
    good = tmp_path / ("chat\x1b[2J.md")
    good.write_text("## User\nhi\n## Assistant\nhello\n")
    assert runner.invoke(main, ["import", str(good)]).exit_code == 0
    again = runner.invoke(main, ["import", str(good)])
    _no_escapes(again.output)
    assert "skipped chat\\x1b[2J.md: same content as import #1" in again.output
    listed = runner.invoke(main, ["imports", "list"])
    _no_escapes(listed.output)
    assert "chat\\x1b[2J.md" in listed.output
    prompt = runner.invoke(main, ["imports", "undo", "1"], input="n\n")
    _no_escapes(prompt.output)
