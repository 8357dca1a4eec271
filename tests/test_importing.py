"""Importing chat logs into the store: transactions, dedup, provenance, notes, undo (R2, R15)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from builders import add_memory, write_chatgpt_export

from lpm_local.data.importing import (
    ImportCancelled,
    file_sha256,
    import_files,
    merge_notes,
    undo_import,
)
from lpm_local.errors import BadInput, NotFound
from lpm_local.memory.requests import pending_refit
from lpm_local.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
# (path, format, conversations, messages) as the parsers read them.
FORMATS = [
    ("chatgpt", "chatgpt", 2, 8),
    ("chatgpt_sharded", "chatgpt", 2, 8),
    ("claude/conversations.json", "claude", 2, 6),
    ("openwebui/chat-export-1718100000000.json", "openwebui", 3, 9),
    ("sharegpt/sharegpt.jsonl", "sharegpt", 2, 5),
    ("openai/train.jsonl", "openai-jsonl", 4, 12),
    ("transcripts/chat.md", "transcript", 1, 3),
]


def _count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _broken_export(path: Path, bad_index: int = 3) -> Path:
    """A ChatGPT export whose conversation ``bad_index`` has a malformed mapping: the parser
    yields the ones before it, then raises."""
    write_chatgpt_export(path, 6, 4)
    data = json.loads(path.read_text())
    data[bad_index]["mapping"] = 5
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("relpath, fmt, n_conv, n_msg", FORMATS, ids=[f[0] for f in FORMATS])
def test_each_format_imports_with_provenance(store, relpath, fmt, n_conv, n_msg):
    summary = import_files(store, [FIXTURES / relpath])
    (result,) = summary.files
    assert (result.format, result.status, result.conversations, result.messages) == (
        fmt,
        "added",
        n_conv,
        n_msg,
    )
    record = store.get_import(result.import_id)
    assert (record.n_conversations, record.n_messages, record.format) == (n_conv, n_msg, fmt)
    rows = store.conn.execute("SELECT import_id, source_ref FROM messages").fetchall()
    assert len(rows) == n_msg
    assert all(import_id == record.id and ref for import_id, ref in rows)
    conversations = store.list_conversations(store.active_profile().id)
    assert all(c.import_id == record.id and c.source_ref for c in conversations)


def test_same_file_twice_adds_nothing(store):
    path = FIXTURES / "claude" / "conversations.json"
    import_files(store, [path])
    before = (_count(store, "messages"), _count(store, "conversations"), _count(store, "imports"))
    again = import_files(store, [path, path])
    assert [f.status for f in again.files] == ["duplicate", "duplicate"]
    assert again.messages == 0
    assert (
        _count(store, "messages"),
        _count(store, "conversations"),
        _count(store, "imports"),
    ) == before
    assert "same content as import #1" in "\n".join(again.lines())


def test_dry_run_counts_like_the_real_import_and_writes_nothing(store):
    paths = [FIXTURES / "chatgpt", FIXTURES / "openai" / "train.jsonl"]
    dry = import_files(store, paths, dry_run=True)
    assert [f.status for f in dry.files] == ["would add", "would add"]
    assert _count(store, "messages") == _count(store, "imports") == 0
    assert store.active_profile().note is None
    real = import_files(store, paths)
    assert dry.by_format() == real.by_format()
    assert "would add" in dry.lines()[0] and "added" in real.lines()[0]


def test_bad_conversation_mid_stream_leaves_nothing(store, tmp_path):
    path = _broken_export(tmp_path / "conversations.json")
    message = r"conversations\.json: item 4 .*mapping: expected an object"
    with pytest.raises(BadInput, match=message):
        import_files(store, [path])
    assert _count(store, "messages") == _count(store, "conversations") == 0
    assert _count(store, "imports") == 0
    assert pending_refit(store, store.active_profile().id) is None


def test_a_bad_second_file_keeps_the_first_and_reports_it(store, tmp_path):
    good = FIXTURES / "claude" / "conversations.json"
    bad = _broken_export(tmp_path / "conversations.json")
    with pytest.raises(BadInput) as caught:
        import_files(store, [good, bad])
    assert [f.path for f in caught.value.completed.files] == [good]
    assert _count(store, "messages") == 6 and _count(store, "imports") == 1


def test_cancel_mid_file_writes_nothing(store, tmp_path):
    path = write_chatgpt_export(tmp_path / "conversations.json", 50, 2)

    class CancelLater(threading.Event):
        """Set after a number of checks: the import is cancelled with conversations written."""

        calls = 0

        def is_set(self) -> bool:
            self.calls += 1
            return self.calls > 30

    with pytest.raises(ImportCancelled):
        import_files(store, [path], cancel=CancelLater())
    assert _count(store, "conversations") == _count(store, "imports") == 0


def test_custom_instructions_become_the_profile_note_once(store):
    import_files(store, [FIXTURES / "chatgpt"])
    note = store.active_profile().note
    assert "Preferred name: Sam" in note and "Be concise" in note
    import_files(store, [FIXTURES / "chatgpt_sharded"])  # the same instructions again
    assert store.active_profile().note == note


def test_merge_notes_keeps_existing_text_and_adds_new_once():
    assert merge_notes(None, []) is None
    assert merge_notes("Mine", ["A", "A", "Mine"]) == "Mine\n\nA"
    assert merge_notes("", ["B"]) == "B"


def test_import_records_memory_before_and_requests_a_refit(store):
    profile = store.active_profile()
    version = add_memory(store, profile.id)
    (result,) = import_files(store, [FIXTURES / "claude" / "conversations.json"]).files
    assert store.get_import(result.import_id).memory_version_before == version.id
    assert pending_refit(store, profile.id)["reason"] == "import"
    assert [a.action for a in store.list_audit(profile.id)] == ["import"]


def test_import_into_another_profile(store):
    store.create_profile("work")
    summary = import_files(store, [FIXTURES / "sharegpt" / "sharegpt.json"], profile="work")
    assert summary.profile == "work"
    assert len(store.list_conversations(store.get_profile("work").id)) == 2
    assert store.list_conversations(store.active_profile().id) == []
    with pytest.raises(NotFound):
        import_files(store, [FIXTURES / "sharegpt" / "sharegpt.json"], profile="nobody")


def test_undo_restores_the_memory_bit_for_bit(store):
    profile = store.active_profile()
    before = add_memory(store, profile.id, seed=1)
    store.add_message(store.create_conversation(profile.id, "typed").id, "user", "mine")
    (result,) = import_files(store, [FIXTURES / "chatgpt"]).files
    learned = add_memory(store, profile.id, seed=2, parent_id=before.id)  # a refit after it
    undone = undo_import(store, result.import_id)
    assert (undone.memory_version, undone.memory_restored) == (before.id, True)
    current = store.current_memory_version(profile.id)
    assert current.tensors == before.tensors and current.sha256 == before.sha256
    assert learned.id in [v.id for v in store.list_memory_versions(profile.id)]
    assert _count(store, "messages") == 1  # the typed one stays
    assert pending_refit(store, profile.id) is None
    with pytest.raises(NotFound):
        store.get_import(result.import_id)


def test_undo_without_memory_before_clears_it(store):
    profile = store.active_profile()
    (result,) = import_files(store, [FIXTURES / "claude" / "conversations.json"]).files
    add_memory(store, profile.id)
    undone = undo_import(store, result.import_id)
    assert (undone.memory_version, undone.memory_restored) == (None, True)
    assert store.current_memory_version(profile.id) is None


def test_undo_when_the_earlier_version_is_gone_clears_memory(store):
    profile = store.active_profile()
    before = add_memory(store, profile.id, seed=1)
    (result,) = import_files(store, [FIXTURES / "claude" / "conversations.json"]).files
    add_memory(store, profile.id, seed=2)
    store.delete_memory_versions([before.id])
    undone = undo_import(store, result.import_id)
    assert (undone.memory_version, undone.memory_restored) == (None, False)
    assert store.current_memory_version(profile.id) is None


def test_undo_keeps_a_refit_request_of_a_later_import(store):
    first = import_files(store, [FIXTURES / "claude" / "conversations.json"]).files[0]
    import_files(store, [FIXTURES / "chatgpt"])
    undo_import(store, first.import_id)
    assert pending_refit(store, store.active_profile().id)["reason"] == "import"


def test_file_identity_of_files_and_directories(tmp_path):
    a = tmp_path / "a.json"
    a.write_text("[1]")
    b = tmp_path / "b.json"
    b.write_text("[1]")
    assert file_sha256(a) == file_sha256(b)  # content, not name
    b.write_text("[2]")
    assert file_sha256(a) != file_sha256(b)
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "conversations.json").write_text("[]")
    first = file_sha256(folder)
    (folder / "user.json").write_text("{}")
    assert file_sha256(folder) != first


def test_progress_reports_bytes_and_messages(store, tmp_path):
    path = write_chatgpt_export(tmp_path / "conversations.json", 300, 4, words=200)
    seen: list[tuple[str, float | None]] = []
    import_files(store, [path], progress=lambda stage, fraction: seen.append((stage, fraction)))
    fractions = [f for _, f in seen if f is not None]
    assert len(fractions) >= 2 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[-1][0] == "conversations.json: 1,200 messages"


# -- all or nothing under mutation (R11 at the store level; the parsers have their own fuzz) ----

_MUTABLE = [
    "chatgpt/conversations.json",
    "claude/conversations.json",
    "sharegpt/sharegpt.jsonl",
    "openai/train.jsonl",
    "openwebui/chat-export-1718100000000.json",
    "transcripts/chat.md",
]


def _mutate(data: bytes, rng) -> bytes:
    cut = rng.randrange(1, len(data))
    kind = rng.choice(["truncate", "flip", "splice", "nul"])
    if kind == "truncate":
        return data[:cut]
    if kind == "flip":
        return data[:cut] + bytes([data[cut] ^ (1 << rng.randrange(8))]) + data[cut + 1 :]
    if kind == "splice":
        other = rng.randrange(len(data))
        return data[:cut] + data[other : other + rng.randrange(1, 64)] + data[cut:]
    return data[:cut] + b"\x00" + data[cut:]


def _mutation_round(store: Store, tmp_path: Path, cases: int, seed: int) -> dict[str, int]:
    import random

    rng = random.Random(seed)
    outcomes = {"imported": 0, "refused": 0}
    for case in range(cases):
        source = FIXTURES / rng.choice(_MUTABLE)
        path = tmp_path / f"case{case}{source.suffix}"
        path.write_bytes(_mutate(source.read_bytes(), rng))
        before = (_count(store, "messages"), _count(store, "imports"))
        try:
            summary = import_files(store, [path])
        except BadInput as error:
            assert "\n" not in str(error) and str(error).startswith(path.name), str(error)
            assert (_count(store, "messages"), _count(store, "imports")) == before
            outcomes["refused"] += 1
        else:
            added = summary.messages
            assert _count(store, "messages") == before[0] + added
            outcomes["imported"] += 1
    return outcomes


def test_mutated_files_import_whole_or_not_at_all(store, tmp_path):
    outcomes = _mutation_round(store, tmp_path, 120, seed=1)
    assert outcomes["refused"] > 20 and outcomes["imported"] > 5, outcomes


@pytest.mark.slow
def test_mutated_files_import_whole_or_not_at_all_many(store, tmp_path):
    outcomes = _mutation_round(store, tmp_path, 1500, seed=2)
    print(outcomes)
    assert outcomes["refused"] > 300, outcomes
