"""The same conversations arriving again add nothing (issue 15.7), and undoing an import takes
back what it added to the profile note (issue 15.6).

Dedup is by content: a conversation's (role, text) sequence is hashed
(``data.sources.conversation_sha256``) and stored with it (migration m004), so the json, the
zip and the unzipped folder of one export -- three different byte streams -- and a bundle
restored into the profile it came from all add each conversation once.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from builders import add_memory, write_chatgpt_export
from click.testing import CliRunner
from sqlite_utils import Database

from lpm_local.cli import main
from lpm_local.data.bundle.export import export_bundle
from lpm_local.data.bundle.restore import import_bundle
from lpm_local.data.importing import import_files, undo_import
from lpm_local.storage.migrations import migrations
from lpm_local.storage.records import NewMessage
from lpm_local.storage.store import Store


def _containers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """One export of 3 conversations as conversations.json, as a zip, and as a folder."""
    folder = tmp_path / "export"
    folder.mkdir()
    write_chatgpt_export(folder / "conversations.json", 3, 4)
    (folder / "user.json").write_text("{}")
    plain = tmp_path / "conversations.json"
    shutil.copy(folder / "conversations.json", plain)
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for item in sorted(folder.iterdir()):
            zf.write(item, item.name)
    return plain, archive, folder


def _counts(store: Store) -> tuple[int, int]:
    return (
        store._scalar("SELECT count(*) FROM conversations"),
        store._scalar("SELECT count(*) FROM messages"),
    )


def test_one_export_in_three_containers_adds_its_conversations_once(store, tmp_path):
    plain, archive, folder = _containers(tmp_path)
    first = import_files(store, [plain])
    assert (first.conversations, first.messages) == (3, 12)
    again = import_files(store, [archive, folder])
    assert [f.status for f in again.files] == ["added", "added"]  # new bytes, same chats
    assert [(f.conversations, f.skipped) for f in again.files] == [(0, 3), (0, 3)]
    assert _counts(store) == (3, 12)
    assert "export.zip: left out 3 conversations the profile already holds" in " | ".join(
        again.lines()
    )


def test_a_changed_conversation_is_added_and_the_rest_left_out(store, tmp_path):
    plain, _, _ = _containers(tmp_path)
    import_files(store, [plain])
    data = json.loads(plain.read_text())
    node = next(n for n in data[0]["mapping"].values() if n["message"])
    node["message"]["content"]["parts"] = ["a different first question"]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    result = import_files(store, [changed])
    assert (result.conversations, result.files[0].skipped) == (1, 2)


def test_dry_run_counts_what_would_be_left_out(store, tmp_path):
    plain, archive, _ = _containers(tmp_path)
    import_files(store, [plain])
    dry = import_files(store, [archive], dry_run=True)
    assert (dry.conversations, dry.files[0].skipped) == (0, 3)


def test_a_bundle_restored_into_its_own_profile_adds_no_chat_twice(store, tmp_path):
    plain, _, _ = _containers(tmp_path)
    import_files(store, [plain])
    profile = store.active_profile()
    typed = store.create_conversation(profile.id, "typed here")
    store.add_messages(
        typed.id, [NewMessage("user", "a chat typed in lpm"), NewMessage("assistant", "ok")]
    )
    add_memory(store, profile.id)
    bundle = tmp_path / "me.lpm"
    export_bundle(store, bundle, with_history=True)
    before = _counts(store)
    restored = import_bundle(store, bundle, profile=profile.name)
    assert (restored.conversations, restored.messages) == (0, 0)
    assert _counts(store) == before == (4, 14)
    # Into another profile it is all new.
    other = import_bundle(store, bundle, profile="other")
    assert (other.conversations, other.messages) == (4, 14)


def test_rows_from_before_the_migration_are_recognised(tmp_path):
    """A database made before m004 (no hashes stored) still dedups: rows without a hash are
    hashed when an import looks for duplicates."""
    path = tmp_path / "old.sqlite3"
    with Store.open(path, migrate=False) as old:
        migrations.apply(Database(old.conn), stop_before="m004_content_dedup_and_import_notes")
    plain, archive, _ = _containers(tmp_path)
    # The old schema cannot take the new column: write the rows the way the old code did.
    with Store.open(path, migrate=False) as old:
        profile = old.active_profile()
        with old.transaction():
            old.conn.execute(
                "INSERT INTO imports (profile_id, file_sha256, created_at) VALUES (?, 'x', 'now')",
                [profile.id],
            )
        for conv in json.loads(plain.read_text()):
            chat = old.create_conversation(profile.id, conv["title"], import_id=1)
            nodes = [n["message"] for n in conv["mapping"].values() if n["message"]]
            old.add_messages(
                chat.id,
                [NewMessage(m["author"]["role"], m["content"]["parts"][0]) for m in nodes],
                import_id=1,
            )
    with Store.open(path) as store:
        assert store._scalar("SELECT count(*) FROM conversations WHERE content_sha256 IS NULL") == 3
        result = import_files(store, [archive])
        assert (result.conversations, result.files[0].skipped) == (0, 3)


def _custom_instructions_export(path: Path) -> Path:
    write_chatgpt_export(path, 1, 2)
    data = json.loads(path.read_text())
    mapping = data[0]["mapping"]
    # On the path, as ChatGPT puts it: root -> context -> first message.
    first = mapping["root"]["children"][0]
    mapping["root"]["children"] = ["ctx"]
    mapping[first]["parent"] = "ctx"
    mapping["ctx"] = {
        "id": "ctx",
        "parent": "root",
        "children": [first],
        "message": {
            "id": "ctx",
            "author": {"role": "user"},
            "content": {"content_type": "user_editable_context"},
            "metadata": {
                "user_context_message_data": {
                    "about_user_message": "I live in Lisbon",
                    "about_model_message": "Be brief",
                }
            },
        },
    }
    path.write_text(json.dumps(data))
    return path


def test_undo_import_removes_what_it_added_to_the_note(store, tmp_path):
    profile = store.active_profile()
    store.set_profile_note(profile.id, "my own note")
    summary = import_files(store, [_custom_instructions_export(tmp_path / "c.json")])
    text = " | ".join(summary.lines())
    assert "c.json: added 2 custom instructions to the profile note" in text
    assert f"`lpm imports undo {summary.files[0].import_id}` removes it" in text
    note = store.get_profile_by_id(profile.id).note
    assert note.startswith("my own note\n\n") and "I live in Lisbon" in note
    result = undo_import(store, summary.files[0].import_id)
    assert result.notes_removed == 2
    assert store.get_profile_by_id(profile.id).note == "my own note"


def test_undo_keeps_a_note_that_was_already_there(store, tmp_path):
    """A second import with the same custom instructions added nothing to the note, so undoing
    it removes nothing; undoing the first then empties it."""
    first = import_files(store, [_custom_instructions_export(tmp_path / "a.json")])
    second_path = _custom_instructions_export(tmp_path / "b.json")
    data = json.loads(second_path.read_text())
    data[0]["title"] = "another file, same instructions"
    second_path.write_text(json.dumps(data))
    second = import_files(store, [second_path])
    assert second.files[0].notes_added == 0
    profile = store.active_profile()
    note = store.get_profile_by_id(profile.id).note
    assert undo_import(store, second.files[0].import_id).notes_removed == 0
    assert store.get_profile_by_id(profile.id).note == note
    undo_import(store, first.files[0].import_id)
    assert store.get_profile_by_id(profile.id).note is None


def test_cli_undo_says_the_note_went(tmp_path):
    runner = CliRunner()
    path = _custom_instructions_export(tmp_path / "c.json")
    imported = runner.invoke(main, ["import", str(path)])
    assert "c.json: added 2 custom instructions to the profile note" in imported.output
    undone = runner.invoke(main, ["imports", "undo", "1", "--yes"])
    assert undone.exit_code == 0, undone.output
    assert "removed what it had added to the profile note (2 part(s))" in undone.output
