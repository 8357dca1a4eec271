"""`lpm chats ...` on a real store with a real import (no model is loaded)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from lpm_local.cli import main
from lpm_local.data.importing import import_files
from lpm_local.memory import requests
from lpm_local.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def one_line_error(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


def imported() -> list:
    """The ShareGPT fixture imported (its chats have no titles of their own)."""
    with Store.open() as store:
        import_files(store, [FIXTURES / "sharegpt" / "sharegpt.json"])
        return store.list_conversations(store.active_profile().id)


def test_imported_chats_are_titled_from_their_first_question():
    titles = sorted(c.title for c in imported())
    assert "Summarize the plot of Hamlet in two sentences." in titles
    assert "2+2?" in titles
    assert None not in titles


def test_list_shows_ids_newest_first_and_json():
    chats = imported()
    result = run("chats", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "updated", "msgs", "title"]
    for chat in chats:
        assert any(line.split()[0] == f"#{chat.id}" and "imported" in line for line in lines)
    listed = json.loads(run("chats", "list", "--json").output)
    assert [c["id"] for c in listed] == [c.id for c in chats]
    assert listed[0].keys() >= {"id", "title", "message_count", "learned", "import_id"}
    assert len(json.loads(run("chats", "list", "--json", "-n", "1").output)) == 1


def test_search_scans_titles_and_every_message_in_any_case():
    imported()
    hits = json.loads(run("chats", "list", "--json", "-q", "OPHELIA").output)  # a later message
    assert [c["title"] for c in hits] == ["Summarize the plot of Hamlet in two sentences."]
    assert run("chats", "list", "-q", "no such words anywhere").output == "no chats match\n"


def test_show_prints_every_message():
    chat = next(c for c in imported() if c.title.startswith("Summarize"))
    result = run("chats", "show", str(chat.id))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"#{chat.id} Summarize the plot")
    assert "[user]" in result.output and "Who is Ophelia?" in result.output
    shown = json.loads(run("chats", "show", f"#{chat.id}", "--json").output)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant", "user", "assistant"]


def test_export_formats_to_private_files_and_markdown_imports_back(tmp_path):
    chat = next(c for c in imported() if c.title.startswith("Summarize"))
    md = tmp_path / "chat.md"
    result = run("chats", "export", str(chat.id), "--format", "md", "-o", str(md))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(md.stat().st_mode) == 0o600
    text = md.read_text()
    assert text.startswith("# Summarize the plot of Hamlet in two sentences.\n")
    assert "\n## User\n\nWho is Ophelia?\n" in text
    every = tmp_path / "all.jsonl"
    assert run("chats", "export", "--all", "--format", "jsonl", "-o", str(every)).exit_code == 0
    lines = [json.loads(line) for line in every.read_text().splitlines()]
    assert len(lines) == len(imported_ids()) and all("messages" in line for line in lines)
    as_json = json.loads(run("chats", "export", str(chat.id), "--format", "json").output)
    assert as_json["chats"][0]["messages"][1]["content"].startswith("Prince Hamlet")
    with Store.open() as store:  # the Markdown is lpm import's transcript format
        # Into another profile: the same chat again in this one is a duplicate, left out.
        copy = store.create_profile("copy")
        import_files(store, [md], profile="copy")
        back = store.list_conversations(copy.id)[0]
        assert back.title == chat.title
        assert [m.content for m in store.messages(back.id)][-1].startswith("Polonius")


def imported_ids() -> list[int]:
    with Store.open() as store:
        return [c.id for c in store.list_conversations(store.active_profile().id)]


def test_export_needs_one_id_or_all():
    assert run("chats", "export").exit_code == 2
    one_line_error(run("chats", "export", "999", "--format", "md"), "does not exist")


def test_rename_keeps_titles_to_one_line():
    chat = imported()[0]
    result = run("chats", "rename", str(chat.id), "Trip\nto [b]Lisbon[/b]")
    assert result.exit_code == 0, result.output
    with Store.open() as store:
        assert store.get_conversation(chat.id).title == "Trip to [b]Lisbon[/b]"
    one_line_error(run("chats", "rename", str(chat.id), "   "), "the title is empty")
    one_line_error(run("chats", "rename", "abc", "x"), "not a chat id")


def test_delete_of_a_chat_memory_never_learned_loads_nothing():
    chat = imported()[0]
    result = run("chats", "delete", str(chat.id), "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing to refit" in result.output
    assert chat.id not in imported_ids()


def test_delete_asks_first():
    chat = imported()[0]
    assert run("chats", "delete", str(chat.id), input="n\n").exit_code == 1
    assert chat.id in imported_ids()


def test_delete_forgets_what_the_memory_learned_like_lpm_forget():
    chats = imported()
    with Store.open() as store:
        profile = store.active_profile()
        learned = store.add_memory_version(
            profile.id,
            tensors=b"x" * 64,
            backbone="x",
            projector_sha256=None,
            config_json=None,
            trained_through_message_id=store.last_message_id(profile.id),
        )
    result = run("chats", "delete", str(chats[0].id), "--yes", "--later")
    assert result.exit_code == 0, result.output
    assert f"versions deleted because they learned from it: #{learned.id}" in result.output
    assert "a refit is requested" in result.output
    with Store.open() as store:
        profile = store.active_profile()
        assert store.list_memory_versions(profile.id) == []
        assert requests.pending_refit(store, profile.id)["reason"] == "forget"
        assert chats[0].id not in [c.id for c in store.list_conversations(profile.id)]


def test_a_chat_of_another_profile_is_not_found():
    chat = imported()[0]
    with Store.open() as store:
        store.create_profile("other")
    one_line_error(run("chats", "show", str(chat.id), "--profile", "other"), "does not exist")
