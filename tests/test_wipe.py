"""Wipe: nothing of the wiped data left in any file (R5), memory-only keeps chats (R6), a wipe
killed half way completes at the next open (R3), and the CLI asks before it deletes."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import torch
from builders import add_memory, finite_marker_bytes, write_chatgpt_export
from click.testing import CliRunner

from lpm_local import locations
from lpm_local.cli import wipe as wipe_cli
from lpm_local.cli.base import LpmGroup
from lpm_local.data.bundle.export import export_bundle
from lpm_local.data.importing import import_files
from lpm_local.data.wipe import (
    WipeScope,
    planned,
    resume_pending_wipes,
    verify_wiped,
    wipe,
    wipe_and_verify,
)
from lpm_local.errors import NotFound
from lpm_local.storage.records import NewMessage, utc_now
from lpm_local.storage.store import Store


def _scan(root: Path, markers: dict[str, bytes]) -> dict[str, list[str]]:
    """marker name -> files under ``root`` holding it. Only call with every store closed."""
    found: dict[str, list[str]] = {name: [] for name in markers}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for name, marker in markers.items():
            if marker in data:
                found[name].append(str(path.relative_to(root)))
    return found


def seed_markers(store: Store, profile_name: str, tmp: Path, seed: int) -> dict[str, bytes]:
    """Random 32-byte markers in a slot blob, a typed message and an imported message."""
    rng = random.Random(seed)
    profile = store.ensure_profile(profile_name)
    slot_marker = finite_marker_bytes(rng)
    raw = bytearray(
        torch.randn(4, 16, generator=torch.Generator().manual_seed(seed)).numpy().tobytes()
    )
    raw[64:96] = slot_marker
    slots = torch.frombuffer(raw, dtype=torch.float32).reshape(4, 16).clone()
    version = add_memory(store, profile.id, slots=slots)
    assert slot_marker in version.tensors
    typed = rng.randbytes(32).hex().encode()
    conv = store.create_conversation(profile.id, "typed")
    store.add_message(conv.id, "user", f"my secret is {typed.decode()}")
    imported = rng.randbytes(32).hex().encode()
    export = write_chatgpt_export(tmp / f"export-{seed}.json", 3, 4, marker=imported.decode())
    import_files(store, [export], profile=profile_name)
    export.unlink()  # only the app's copy remains
    return {"slot": slot_marker, "typed": typed, "imported": imported}


def _bundle_in_data_dir(store: Store, profile: str) -> Path:
    """An export (with history) and a partial export left in the data dir: wipe removes them."""
    path = export_bundle(
        store, locations.data_dir() / f"{profile}.lpm", profile=profile, with_history=True
    ).path
    (locations.data_dir() / f".{profile}.lpm.x1.lpm-partial").write_bytes(path.read_bytes())
    return path


@pytest.mark.parametrize("kind", ["profile", "all"])
def test_wiped_markers_leave_every_file(lpm_home, tmp_path, kind):
    with Store.open() as store:
        store.create_profile("other")
        markers = seed_markers(store, "default", tmp_path, seed=1)
        kept = seed_markers(store, "other", tmp_path, seed=2)
        _bundle_in_data_dir(store, "default")
    found = _scan(lpm_home, markers)
    assert all(found.values()), found  # the markers really were on disk before
    with Store.open() as store:
        report = wipe(store, WipeScope.of(store, kind, "default"))
        assert verify_wiped(store, report) == []
        assert report.rows_left == 0 and report.deleted["messages"] >= 2
        assert len(report.bundle_files) == 2 and len(report.samples) >= 3
    assert _scan(lpm_home, markers) == {name: [] for name in markers}
    still = _scan(lpm_home, kept)
    assert all(still.values()) == (kind == "profile"), still


@pytest.mark.parametrize("kind", ["memory", "profile", "all"])
def test_the_one_wipe_path_deletes_what_it_planned_and_verifies_it(lpm_home, tmp_path, kind):
    """What the CLI and the TUI both run: the confirmation's counts are the report's."""
    with Store.open() as store:
        store.create_profile("other")
        markers = seed_markers(store, "default", tmp_path, seed=11)
        seed_markers(store, "other", tmp_path, seed=12)
        scope = WipeScope.of(store, kind, "default")
        plan = planned(store, scope)
        assert plan == planned(store, scope) and sum(plan.values()) > 0  # read only
        report = wipe_and_verify(store, scope)
        assert report.deleted == plan and report.rows_left == 0
        assert report.verified and report.leftovers == []
        assert any(line.startswith("verified: none of") for line in report.lines())
    if kind != "memory":
        assert _scan(lpm_home, markers) == {name: [] for name in markers}


def test_forget_memory_keeps_chats(lpm_home, tmp_path):
    with Store.open() as store:
        markers = seed_markers(store, "default", tmp_path, seed=3)
        _bundle_in_data_dir(store, "default")
        profile = store.active_profile()
        report = wipe(store, WipeScope.of(store, "memory"))
        assert verify_wiped(store, report) == []
        assert report.deleted["memory versions"] == 1 and report.rows_left == 0
        assert store.current_memory_version(profile.id) is None
        assert all(imp.memory_version_before is None for imp in store.list_imports(profile.id))
        assert len(store.list_conversations(profile.id)) == 4
    found = _scan(lpm_home, markers)
    assert found["slot"] == []
    assert found["typed"] == found["imported"] == ["data/lpm.sqlite3"]


def test_forget_memory_drops_the_reply_attention_too(tmp_path):
    with Store.open() as store:
        if not store.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'reply_attention'"
        ).fetchone():
            pytest.skip("no reply_attention table in this schema")
        profile = store.ensure_profile("default")
        version = add_memory(store, profile.id)
        conv = store.create_conversation(profile.id, "t")
        reply = store.add_message(conv.id, "assistant", "a reply shaped by memory")
        with store.transaction():
            store.conn.execute(
                "INSERT INTO reply_attention (message_id, version_id, created_at, attention) "
                "VALUES (?, ?, ?, ?)",
                [reply.id, version.id, utc_now(), b"weights"],
            )
        report = wipe(store, WipeScope.of(store, "memory"))
        assert report.deleted["reply attention records"] == 1 and report.rows_left == 0
        assert store.messages(conv.id)[0].content == "a reply shaped by memory"


def test_verification_finds_a_copy_left_behind(lpm_home, tmp_path):
    with Store.open() as store:
        markers = seed_markers(store, "default", tmp_path, seed=4)
        report = wipe(store, WipeScope.of(store, "profile"))
        (locations.data_dir() / "notes.txt").write_bytes(b"x" + markers["typed"] + b"y")
        assert any(s.value in markers["typed"] for s in report.samples)
        leftovers = verify_wiped(store, report)
    assert leftovers == ["notes.txt"]
    assert "WARNING" in report.lines()[-2]


def test_a_value_shared_with_kept_data_is_not_a_leftover(tmp_path):
    export = write_chatgpt_export(tmp_path / "shared.json", 2, 4, words=40)
    with Store.open() as store:
        store.create_profile("other")
        import_files(store, [export])
        import_files(store, [export], profile="other")
        report = wipe(store, WipeScope.of(store, "profile", "default"))
        assert report.samples and verify_wiped(store, report) == []


# -- R3: a wipe interrupted, then resumed --------------------------------------------------------


def _intent(store: Store, kind: str, profile_id: int | None, name: str | None, status: str) -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO pending_wipes (kind, profile_id, profile_name, status, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [kind, profile_id, name, status, utc_now()],
        )


def test_an_intent_left_by_a_crash_is_completed(lpm_home, tmp_path):
    with Store.open() as store:
        markers = seed_markers(store, "default", tmp_path, seed=5)
        profile = store.active_profile()
        _intent(store, "profile", profile.id, profile.name, "pending")  # then "killed"
    # migrate=False skips the automatic resume, so this test drives it and reads its report.
    with Store.open(migrate=False) as store:
        (report,) = resume_pending_wipes(store)
        assert report.deleted["messages"] == 13 and report.rows_left == 0
        with pytest.raises(NotFound):
            store.get_profile("default")
        assert store.conn.execute("SELECT count(*) FROM pending_wipes").fetchone()[0] == 0
        assert resume_pending_wipes(store) == []
    assert _scan(lpm_home, markers) == {name: [] for name in markers}


def test_opening_the_store_finishes_a_killed_wipe(lpm_home, tmp_path):
    with Store.open() as store:
        markers = seed_markers(store, "default", tmp_path, seed=8)
        profile = store.active_profile()
        _intent(store, "profile", profile.id, profile.name, "pending")  # then "killed"
    with Store.open() as store:
        assert "default" not in [p.name for p in store.list_profiles()]
        assert store.conn.execute("SELECT count(*) FROM pending_wipes").fetchone()[0] == 0
    assert _scan(lpm_home, markers) == {name: [] for name in markers}


def test_a_resumed_wipe_never_deletes_newer_data(tmp_path):
    with Store.open() as store:
        seed_markers(store, "default", tmp_path, seed=6)
        profile = store.active_profile()
        # Delete committed before the kill: only the VACUUM is left to do.
        _intent(store, "profile", profile.id, profile.name, "vacuum")
        # The id now names another profile: a pending intent must not touch it.
        _intent(store, "profile", profile.id, "someone-else", "pending")
    with Store.open(migrate=False) as store:
        reports = resume_pending_wipes(store)
        assert [r.deleted for r in reports] == [{}, {}]
        assert len(store.list_conversations(profile.id)) == 4


_CHILD = """
import sys
from lpm_local.storage.store import Store
from lpm_local.data.wipe import WipeScope, wipe
store = Store.open()
print("ready", flush=True)
wipe(store, WipeScope.of(store, "profile", "default"))
print("done", flush=True)
"""


def _template(tmp: Path) -> tuple[Path, dict[str, bytes]]:
    """A data dir whose wipe takes long enough to be killed in every phase."""
    home = tmp / "template"
    os.environ["LPM_HOME"] = str(home)
    with Store.open() as store:
        markers = seed_markers(store, "default", tmp, seed=7)
        import_files(store, [write_chatgpt_export(tmp / "bulk.json", 400, 20, words=30)])
    return home, markers


def _phase(store: Store) -> str:
    """Where the kill landed, read before anything resumes the wipe."""
    row = store.conn.execute("SELECT status FROM pending_wipes").fetchone()
    if row is not None:
        return {
            "pending": "killed before the delete committed",
            "vacuum": "killed after the delete, before VACUUM ended",
        }[row[0]]
    if "default" in [p.name for p in store.list_profiles()]:
        return "killed before the intent committed"
    return "finished before the kill"


def _kill_loop(tmp: Path, runs: int, monkeypatch) -> dict[str, int]:
    template, markers = _template(tmp)
    outcomes: dict[str, int] = {}
    duration = None
    for run in range(runs + 1):
        home = tmp / f"run{run}"
        shutil.copytree(template, home)
        monkeypatch.setenv("LPM_HOME", str(home))
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdout=subprocess.PIPE,
            env={**os.environ, "LPM_HOME": str(home)},
        )
        assert child.stdout.readline().strip() == b"ready"
        started = time.monotonic()
        if duration is None:  # the first run is not killed: it measures the wipe
            assert child.wait(120) == 0
            duration = time.monotonic() - started
            continue
        time.sleep(random.Random(run).uniform(0, duration * 0.8))
        child.send_signal(signal.SIGKILL)
        child.wait()
        with Store.open(migrate=False) as store:  # look before the automatic resume
            phase = _phase(store)
            outcomes[phase] = outcomes.get(phase, 0) + 1
            resume_pending_wipes(store)
            names = [p.name for p in store.list_profiles()]
            assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if phase == "killed before the intent committed":  # nothing wiped, nothing to resume
            assert "default" in names
            continue
        assert "default" not in names
        assert _scan(home, markers) == {name: [] for name in markers}
        shutil.rmtree(home)
    return outcomes


def test_kill_during_wipe_then_restart(tmp_path, monkeypatch):
    outcomes = _kill_loop(tmp_path, 1, monkeypatch)
    assert sum(outcomes.values()) == 1


@pytest.mark.slow
def test_kill_during_wipe_then_restart_many(tmp_path, monkeypatch):
    outcomes = _kill_loop(tmp_path, 30, monkeypatch)
    print(outcomes)
    # The kills must have hit the wipe itself, not only its edges.
    assert (
        outcomes.get("killed before the delete committed", 0)
        + outcomes.get("killed after the delete, before VACUUM ended", 0)
        >= 5
    ), outcomes


# -- the CLI -------------------------------------------------------------------------------------


def _cli() -> click.Group:
    @click.group(cls=LpmGroup)
    def memory() -> None:
        """memory"""

    for command in wipe_cli.MEMORY_COMMANDS:
        memory.add_command(command)
    return memory


def test_cli_wipe_asks_and_reports(tmp_path):
    with Store.open() as store:
        seed_markers(store, "default", tmp_path, seed=8)
    runner = CliRunner()
    refused = runner.invoke(_cli(), ["wipe", "--memory-only"], input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    with Store.open() as store:
        assert store.current_memory_version(store.active_profile().id) is not None
    done = runner.invoke(_cli(), ["wipe", "--memory-only"], input="y\n")
    assert done.exit_code == 0, done.output
    wiped = "wiped the memory of profile 'default' (its chats stay): 1 memory versions"
    assert wiped in done.output
    assert "verified: none of 1 sampled deleted values (1 memory blob) remains" in done.output
    everything = runner.invoke(_cli(), ["wipe", "--all", "--yes"])
    assert everything.exit_code == 0 and "rows of it left in the database: 0" in everything.output


def test_wipe_report_says_when_nothing_could_be_sampled():
    """Only short messages: the byte scan has nothing to look for, and the report says so
    instead of "verified: none of 0 sampled deleted values"."""
    with Store.open() as store:
        profile = store.active_profile()
        chat = store.create_conversation(profile.id, "short")
        store.add_messages(chat.id, [NewMessage("user", "hi"), NewMessage("assistant", "yo")])
    done = CliRunner().invoke(_cli(), ["wipe", "--all", "--yes"])
    assert done.exit_code == 0, done.output
    assert "none of 0" not in done.output
    assert "not verified by a byte scan: nothing deleted was long enough to sample" in done.output


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "say what to wipe"),
        (["--all", "--profile", "x"], "--all cannot be combined"),
    ],
)
def test_cli_wipe_usage_errors(args, message):
    result = CliRunner().invoke(_cli(), ["wipe", *args])
    assert result.exit_code == 2 and message in result.output


def test_cli_wipe_of_a_missing_profile_is_one_line():
    result = CliRunner().invoke(_cli(), ["wipe", "--profile", "ghost", "--yes"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: profile 'ghost' does not exist"
