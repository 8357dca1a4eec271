"""`lpm import`, `lpm imports list|undo`, `lpm profile ...` and `lpm memory export|import`,
driven through click as a user would (before the lead wires them into `lpm`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import pytest
from builders import add_memory
from click.testing import CliRunner

from lpm_local.cli import bundles, importing, profiles
from lpm_local.cli import wipe as wipe_cli
from lpm_local.cli.base import LpmGroup
from lpm_local.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


@click.group(cls=LpmGroup)
def lpm() -> None:
    """A stand-in for `lpm` with this module's commands attached."""


for _command in (*importing.COMMANDS, *profiles.COMMANDS):
    lpm.add_command(_command)


@lpm.group(cls=LpmGroup)
def memory() -> None:
    """The `lpm memory` group."""


for _command in (*bundles.MEMORY_COMMANDS, *wipe_cli.MEMORY_COMMANDS):
    memory.add_command(_command)


def run(*args: str, input: str | None = None, code: int = 0):
    result = CliRunner().invoke(lpm, [str(a) for a in args], input=input)
    assert result.exit_code == code, result.output
    return result.output


def _messages() -> int:
    with Store.open() as store:
        return store.conn.execute("SELECT count(*) FROM messages").fetchone()[0]


def test_profile_lifecycle():
    assert "* default" in run("profile", "list")
    assert "created profile 'work'" in run("profile", "create", "work")
    assert run("profile", "switch", "work").strip() == "active profile: 'work'"
    listing = run("profile", "list")
    assert "* work" in listing and "  default" in listing
    run("profile", "delete", "work", input="n\n", code=1)
    assert "work" in run("profile", "list")
    out = run("profile", "delete", "work", "--yes")
    assert "wiped profile 'work' and everything it holds" in out and "verified" in out
    assert "* default" in run("profile", "list")  # the active one went: back to default


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["profile", "create", "bad/name"],
            "Error: invalid profile name 'bad/name'. use 1-64 "
            "letters, digits, '-', '_' or inner spaces",
        ),
        (["profile", "create", "default"], "Error: profile 'default' already exists"),
        (["profile", "switch", "ghost"], "Error: profile 'ghost' does not exist"),
        (["profile", "delete", "ghost", "--yes"], "Error: profile 'ghost' does not exist"),
        (["imports", "undo", "42", "--yes"], "Error: import #42 does not exist"),
        (
            ["import", "--profile", "ghost", FIXTURES / "chatgpt"],
            "Error: profile 'ghost' does not exist",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(args, message):
    run("profile", "list")  # creates the default profile
    output = run(*args, code=2)
    assert output.strip().splitlines() == [message]


def test_import_dry_run_then_real_then_duplicate():
    claude = FIXTURES / "claude" / "conversations.json"
    dry = run("import", "--dry-run", FIXTURES / "chatgpt", claude)
    assert "chatgpt: would add 2 conversations, 8 messages (1 file)" in dry
    assert _messages() == 0
    real = run("import", FIXTURES / "chatgpt", claude)
    assert "claude: added 2 conversations, 6 messages (1 file)" in real
    assert "added 4 conversations, 14 messages in total" in real
    again = run("import", FIXTURES / "chatgpt")
    assert "skipped chatgpt: same content as import #1" in again and _messages() == 14


def test_bad_file_is_one_line_naming_the_place_and_writes_nothing(tmp_path):
    bad = tmp_path / "conversations.json"
    bad.write_text(json.dumps([{"title": "x", "mapping": {"a": {"message": 3}}}]))
    output = run("import", bad, code=2)
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: conversations.json: item 1")
    assert "mapping" in lines[0] and _messages() == 0


def test_earlier_files_are_reported_when_a_later_one_fails(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    output = run("import", FIXTURES / "sharegpt" / "sharegpt.json", empty, code=2)
    assert "sharegpt: added 2 conversations, 7 messages (1 file)" in output
    assert output.strip().splitlines()[-1] == "Error: empty.json: the file is empty"
    assert _messages() == 7


def test_imports_list_and_undo():
    assert "has no imports" in run("imports", "list")
    with Store.open() as store:
        version = add_memory(store, store.active_profile().id)
    run("import", FIXTURES / "openai" / "train.jsonl")
    listing = run("imports", "list")
    assert "openai-jsonl" in listing and "train.jsonl" in listing and "12" in listing
    run("imports", "undo", "1", input="n\n", code=1)
    assert _messages() == 12
    out = run("imports", "undo", "1", input="y\n")
    assert "removed import #1: 4 conversations, 12 messages" in out
    assert f"memory restored to version #{version.id}" in out
    assert _messages() == 0


def test_memory_export_and_import(tmp_path):
    with Store.open() as store:
        add_memory(store, store.active_profile().id)
    run("import", FIXTURES / "claude" / "conversations.json")
    target = tmp_path / "me.lpm"
    out = run("memory", "export", target, "--with-history")
    assert "exported profile 'default': memory version #1, 2 conversations, 6 messages" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "already exists" in run("memory", "export", target, code=2)
    assert "wrote" in run("memory", "export", target, "--force", "--with-history")
    dry = run("memory", "import", target, "--profile", "copy", "--dry-run")
    assert "would restore into profile 'copy'" in dry
    out = run("memory", "import", target, "--profile", "copy")
    assert "restored into profile 'copy': memory version" in out and "6 messages" in out
    assert "nothing added" in run("memory", "import", target, "--profile", "copy")
    bogus = tmp_path / "bogus.lpm"
    bogus.write_bytes(b"not a zip")
    assert run("memory", "import", bogus, code=2).strip() == (
        "Error: bogus.lpm: not an .lpm bundle: not a zip archive"
    )
