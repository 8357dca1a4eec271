"""Store queries: profiles, settings, conversations, messages, imports, memory versions."""

from __future__ import annotations

import hashlib
import os

import pytest

from lpm_local.errors import BadInput, CorruptDatabase, NotFound
from lpm_local.storage.records import NewMessage, to_utc_iso
from lpm_local.storage.store import Store


def _count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- profiles and settings ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "Ana María", "work-2", "x_y", "a" * 64, "日本"])
def test_valid_profile_names(store, name):
    assert store.create_profile(name).name == name
    assert store.get_profile(name).memory_enabled is True


@pytest.mark.parametrize("name", ["", " lead", "trail ", "a" * 65, "a/b", "[b]x", "a\nb", "é\x00"])
def test_invalid_profile_names_are_refused(store, name):
    with pytest.raises(BadInput, match="invalid profile name"):
        store.create_profile(name)
    assert store.list_profiles() == []


def test_duplicate_profile_and_missing_profile(store):
    store.create_profile("a")
    with pytest.raises(BadInput, match="already exists"):
        store.create_profile("a")
    with pytest.raises(NotFound, match="profile 'nobody' does not exist"):
        store.get_profile("nobody")
    with pytest.raises(NotFound):
        store.delete_profile("nobody")


def test_active_profile_defaults_switches_and_falls_back(store):
    assert store.active_profile().name == "default"
    store.create_profile("work")
    store.set_active_profile("work")
    assert store.active_profile().name == "work"
    store.delete_profile("work")
    assert store.active_profile().name == "default"
    with pytest.raises(NotFound):
        store.set_active_profile("gone")


def test_profile_flags_and_settings(store):
    p = store.ensure_profile()
    assert store.set_memory_enabled(p.id, False).memory_enabled is False
    assert store.set_profile_note(p.id, "Be brief.").note == "Be brief."
    assert store.get_setting("model", "smollm2-135m") == "smollm2-135m"
    store.set_setting("model", "qwen3-4b")
    assert store.get_setting("model") == "qwen3-4b"
    store.set_setting("model", None)
    assert store.get_setting("model") is None


def test_deleting_a_profile_cascades_to_everything_it_owns(store):
    keep, gone = store.ensure_profile("keep"), store.ensure_profile("gone")
    for p in (keep, gone):
        imp = store.add_import(p.id, file_sha256="f" * 64)
        c = store.create_conversation(p.id, "c", import_id=imp.id)
        store.add_message(c.id, "user", "hello", import_id=imp.id)
        store.add_memory_version(
            p.id, tensors=b"slots", backbone="b", projector_sha256=None, config_json="{}"
        )
        store.finish_refit(store.start_refit(p.id), "failed")
        store.audit(p.id, "import", "1 conversation")
    store.delete_profile("gone")
    for table in ("imports", "conversations", "memory_versions", "refits", "audit"):
        rows = store.conn.execute(f"SELECT DISTINCT profile_id FROM {table}").fetchall()
        assert rows == [(keep.id,)], table
    assert _count(store, "messages") == 1


# -- conversations and messages ----------------------------------------------------------------


def test_messages_and_conversation_order(store):
    p = store.ensure_profile()
    old = store.create_conversation(p.id, "old", created_at="2024-01-01T10:00:00Z")
    new = store.create_conversation(p.id, "new", created_at="2024-02-01T10:00:00+01:00")
    store.add_message(old.id, "user", "[/] <|im_start|> literal", created_at="2024-03-01T00:00:00")
    assert [c.title for c in store.list_conversations(p.id)] == ["old", "new"]
    assert store.get_conversation(old.id).updated_at == "2024-03-01T00:00:00.000000+00:00"
    assert store.get_conversation(new.id).created_at == "2024-02-01T09:00:00.000000+00:00"
    # An older imported message does not move the conversation back in time.
    store.add_message(old.id, "assistant", "ok", created_at="2023-01-01T00:00:00Z")
    assert store.get_conversation(old.id).updated_at.startswith("2024-03-01")
    msgs = store.messages(old.id)
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "[/] <|im_start|> literal"),
        ("assistant", "ok"),
    ]
    assert store.list_conversations(p.id)[0].message_count == 2


def test_message_validation(store):
    c = store.create_conversation(store.ensure_profile().id)
    with pytest.raises(BadInput, match="invalid message role 'tool'"):
        store.add_message(c.id, "tool", "x")
    with pytest.raises(BadInput, match="must be text"):
        store.add_message(c.id, "user", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="not an ISO 8601 timestamp"):
        store.add_message(c.id, "user", "x", created_at="yesterday")
    with pytest.raises(NotFound, match="conversation #999"):
        store.add_message(999, "user", "x")
    with pytest.raises(NotFound):
        store.messages(999)
    assert store.messages(c.id) == []


def test_add_messages_in_bulk_is_all_or_nothing(store):
    c = store.create_conversation(store.ensure_profile().id, created_at="2024-01-01T00:00:00Z")
    good = [NewMessage("user", f"m{i}", "2024-01-02T00:00:00Z", f"ref{i}") for i in range(3)]
    with pytest.raises(BadInput, match="invalid message role 'human'"):
        store.add_messages(c.id, [*good, NewMessage("human", "x")])
    assert store.messages(c.id) == []
    assert store.add_messages(c.id, good) == 3
    assert [(m.content, m.source_ref) for m in store.messages(c.id)] == [
        ("m0", "ref0"),
        ("m1", "ref1"),
        ("m2", "ref2"),
    ]
    assert store.get_conversation(c.id).updated_at.startswith("2024-01-02")
    with pytest.raises(NotFound, match="import #7"):
        store.add_messages(c.id, good, import_id=7)


def test_rename_exclude_delete_conversation(store):
    p = store.ensure_profile()
    c = store.create_conversation(p.id, "a")
    store.add_message(c.id, "user", "hi")
    assert store.rename_conversation(c.id, "b").title == "b"
    assert store.set_conversation_excluded(c.id, True).exclude_from_memory is True
    store.delete_conversation(c.id)
    assert _count(store, "messages") == 0
    with pytest.raises(NotFound):
        store.get_conversation(c.id)


def test_memory_history_skips_excluded_and_respects_after(store):
    p = store.ensure_profile()
    a = store.create_conversation(p.id, "a", created_at="2024-01-01T00:00:00Z")
    b = store.create_conversation(p.id, "b", created_at="2024-01-02T00:00:00Z")
    hidden = store.create_conversation(p.id, "hidden", exclude_from_memory=True)
    m1 = store.add_message(b.id, "user", "b1")
    store.add_message(a.id, "user", "a1")
    store.add_message(a.id, "assistant", "a2")
    store.add_message(hidden.id, "user", "secret")
    history = store.memory_history(p.id)
    assert [(c.title, [m.content for m in ms]) for c, ms in history] == [
        ("a", ["a1", "a2"]),
        ("b", ["b1"]),
    ]
    later = store.memory_history(p.id, after_message_id=m1.id)
    assert [(c.title, [m.content for m in ms]) for c, ms in later] == [("a", ["a1", "a2"])]
    assert store.count_user_messages(p.id) == 2
    assert store.count_user_messages(p.id, after_message_id=m1.id) == 1
    assert store.last_message_id(p.id) == m1.id + 2


def test_imports_are_unique_and_undoable(store):
    p = store.ensure_profile()
    typed = store.create_conversation(p.id, "typed")
    store.add_message(typed.id, "user", "mine")
    imp = store.add_import(p.id, file_sha256="a" * 64, file_name="c.json", format="chatgpt")
    c = store.create_conversation(p.id, "imported", import_id=imp.id, source_ref="conv-1")
    store.add_message(c.id, "user", "from file", import_id=imp.id, source_ref="node-1")
    store.set_import_counts(imp.id, 1, 1)
    assert store.find_import(p.id, "a" * 64).n_messages == 1
    with pytest.raises(BadInput, match="c.json: this file was already imported"):
        store.add_import(p.id, file_sha256="a" * 64, file_name="c.json")
    store.delete_import(imp.id)
    assert [c.title for c in store.list_conversations(p.id)] == ["typed"]
    assert store.list_imports(p.id) == []


# -- memory versions, refits, audit ------------------------------------------------------------


def _version(store, profile_id, data=b"\x00\x01safetensors", **kw):
    return store.add_memory_version(
        profile_id,
        tensors=data,
        backbone="smollm2-135m",
        projector_sha256="p" * 64,
        config_json='{"n": 8}',
        **kw,
    )


def test_memory_version_sha256_round_trip(store):
    p = store.ensure_profile()
    data = os.urandom(4096)
    v = _version(store, p.id, data, train_loss=1.5, heldout_loss=1.7, reason="refit")
    assert v.sha256 == hashlib.sha256(data).hexdigest() and v.n_bytes == 4096
    current = store.current_memory_version(p.id)
    assert current.tensors == data and current.id == v.id
    assert store.get_profile_by_id(p.id).current_version_id == v.id
    listed = store.list_memory_versions(p.id)
    assert [x.id for x in listed] == [v.id] and listed[0].tensors is None


def test_tampered_memory_blob_is_refused(store):
    p = store.ensure_profile()
    v = _version(store, p.id, b"original bytes")
    with store.transaction():
        store.conn.execute(
            "UPDATE memory_versions SET tensors = ? WHERE id = ?", (b"original bytez", v.id)
        )
    with pytest.raises(CorruptDatabase, match="fails its sha256 check"):
        store.current_memory_version(p.id)


def test_rollback_prune_and_ownership_of_versions(store):
    p, q = store.ensure_profile("p"), store.ensure_profile("q")
    assert store.current_memory_version(p.id) is None
    v1 = _version(store, p.id, b"one")
    v2 = _version(store, p.id, b"two", parent_id=v1.id)
    staged = _version(store, p.id, b"three", make_current=False)
    assert store.current_memory_version(p.id).id == v2.id and staged.id > v2.id
    assert store.set_current_version(p.id, v1.id).current_version_id == v1.id
    with pytest.raises(NotFound):
        store.set_current_version(q.id, v1.id)  # another profile's version
    with pytest.raises(NotFound):
        _version(store, q.id, parent_id=v1.id)
    assert store.delete_memory_versions([v1.id, 12345]) == 1
    assert store.current_memory_version(p.id) is None
    assert store.get_memory_version(v2.id).parent_id is None


def test_refits_and_audit(store):
    p = store.ensure_profile()
    refit = store.start_refit(p.id, base_version_id=None)
    assert store.list_refits(p.id)[0].status == "running"
    done = store.finish_refit(refit, "no_improvement", steps=30, detail="heldout 1.7 -> 1.8")
    assert (done.status, done.steps) == ("no_improvement", 30) and done.finished_at
    with pytest.raises(BadInput):
        store.finish_refit(refit, "exploded")
    store.audit(p.id, "wipe", "memory")
    store.audit(None, "startup")
    assert [a.action for a in store.list_audit(p.id)] == ["wipe"]
    assert [a.action for a in store.list_audit(None)] == ["startup"]


def test_timestamps_are_utc_iso():
    assert to_utc_iso("2024-05-01T12:00:00+02:00") == "2024-05-01T10:00:00.000000+00:00"
    assert to_utc_iso(None).endswith("+00:00")
