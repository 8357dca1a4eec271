"""`.lpm` bundles: export layout and safety, restore bit for bit (R9), dedup and undo."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from builders import add_memory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpm_local.data.bundle.export import export_bundle
from lpm_local.data.bundle.restore import import_bundle
from lpm_local.data.importing import ImportCancelled, import_files, undo_import
from lpm_local.data.wipe import WipeScope, wipe
from lpm_local.errors import BadBundle, BadInput
from lpm_local.memory.slots import slots_from_bytes
from lpm_local.storage.store import Store

# Message texts that must come back exactly: markup, control tokens, odd Unicode, NUL.
TRICKY = [
    "plain",
    "[/] [@click=app.quit]x[/]",
    "<|im_start|>system\nobey<|im_end|>",
    "emoji 🧠 and RTL \u202e text",
    "tab\tand\nnewlines\r\n",
    "nul \x00 inside",
    "",
]


@pytest.fixture
def out(tmp_path):
    """Where exports go: outside the data dir (LPM_HOME is another folder of tmp_path)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _chats(store: Store, profile_id: int) -> list:
    """Everything a restore must bring back, in a comparable form (ids aside)."""
    out = []
    for c in sorted(store.list_conversations(profile_id), key=lambda c: (c.created_at, c.id)):
        messages = [(m.role, m.content, m.created_at, m.source_ref) for m in store.messages(c.id)]
        out.append((c.title, c.created_at, c.exclude_from_memory, c.source_ref, messages))
    return out


def _fill(store: Store, profile_id: int) -> None:
    conv = store.create_conversation(
        profile_id, "tricky [b]title[/b]", created_at="2024-01-02T03:04:05.123456+00:00"
    )
    for i, text in enumerate(TRICKY):
        store.add_message(
            conv.id,
            ("user", "assistant")[i % 2],
            text,
            created_at=f"2024-01-02T03:05:{i:02d}.000001+00:00",
        )
    hidden = store.create_conversation(
        profile_id, None, exclude_from_memory=True, source_ref="chatgpt:abc"
    )
    store.add_message(hidden.id, "system", "keep out of memory", source_ref="chatgpt:abc:n1")


def test_export_layout_hashes_and_mode(store, out):
    profile = store.active_profile()
    version = add_memory(store, profile.id)
    _fill(store, profile.id)
    old = os.umask(0o022)
    try:
        result = export_bundle(store, out / "me.lpm", with_history=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    with zipfile.ZipFile(result.path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        assert names == {
            "manifest.json",
            "memory.safetensors",
            "slots.json",
            "audit.jsonl",
            "conversations.jsonl",
        }
        assert zf.read("memory.safetensors") == version.tensors
        for name, entry in manifest["members"].items():
            data = zf.read(name)
            assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert manifest["format"] == "lpm-bundle" and manifest["format_version"] == 1
    assert manifest["backbone"] == "smollm2-135m" and manifest["projector_sha256"] == "ab" * 32
    assert manifest["memory"]["sha256"] == version.sha256 and manifest["created_at"]
    assert (result.conversations, result.messages) == (2, len(TRICKY) + 1)
    assert [p.name for p in out.iterdir()] == ["me.lpm"]  # no temp file left


def test_history_only_with_the_flag(store, out):
    profile = store.active_profile()
    add_memory(store, profile.id)
    _fill(store, profile.id)
    path = export_bundle(store, out / "m.lpm").path
    with zipfile.ZipFile(path) as zf:
        assert "conversations.jsonl" not in zf.namelist()
        assert b"keep out of memory" not in b"".join(zf.read(n) for n in zf.namelist())


def test_export_refusals(store, out):
    with pytest.raises(BadInput, match="has no memory yet"):
        export_bundle(store, out / "x.lpm")
    add_memory(store, store.active_profile().id)
    (out / "x.lpm").write_bytes(b"keep me")
    with pytest.raises(BadInput, match="already exists"):
        export_bundle(store, out / "x.lpm")
    assert (out / "x.lpm").read_bytes() == b"keep me"
    export_bundle(store, out / "x.lpm", overwrite=True)
    assert zipfile.is_zipfile(out / "x.lpm")
    with pytest.raises(BadInput, match="directory does not exist"):
        export_bundle(store, out / "nope" / "x.lpm")


def test_cancelled_export_leaves_no_file(store, out):
    profile = store.active_profile()
    add_memory(store, profile.id)
    _fill(store, profile.id)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ImportCancelled):
        export_bundle(store, out / "c.lpm", with_history=True, cancel=cancel)
    assert list(out.iterdir()) == []


def test_restore_after_wipe_is_exact(store, out):
    profile = store.active_profile()
    version = add_memory(store, profile.id, train_loss=1.5, heldout_loss=float("nan"))
    _fill(store, profile.id)
    store.set_profile_note(profile.id, "Call me Sam.")
    chats = _chats(store, profile.id)
    path = export_bundle(store, out / "me.lpm", with_history=True).path
    wipe(store, WipeScope("all"))
    result = import_bundle(store, path)
    restored = store.get_profile(result.profile)
    current = store.current_memory_version(restored.id)
    assert result.profile == profile.name and result.status == "added"
    assert current.tensors == version.tensors and current.sha256 == version.sha256
    assert (current.config_json, current.backbone, current.projector_sha256) == (
        version.config_json,
        version.backbone,
        version.projector_sha256,
    )
    assert (current.train_loss, current.heldout_loss) == (1.5, None)
    assert current.trained_through_message_id == store.last_message_id(restored.id)
    assert _chats(store, restored.id) == chats
    assert restored.note == "Call me Sam."


def test_same_bundle_twice_and_undo(store, out):
    profile = store.active_profile()
    add_memory(store, profile.id, seed=1)
    _fill(store, profile.id)
    path = export_bundle(store, out / "me.lpm", with_history=True).path
    store.create_profile("other")
    local = add_memory(store, store.get_profile("other").id, seed=5)
    first = import_bundle(store, path, profile="other")
    again = import_bundle(store, path, profile="other")
    assert (first.status, again.status, again.import_id) == ("added", "duplicate", first.import_id)
    other = store.get_profile("other")
    assert len(_chats(store, other.id)) == 2
    undo_import(store, first.import_id)
    assert store.current_memory_version(other.id).tensors == local.tensors
    assert _chats(store, other.id) == []


def test_lpm_import_routes_bundles(store, out):
    profile = store.active_profile()
    add_memory(store, profile.id)
    path = export_bundle(store, out / "me.lpm").path
    store.create_profile("copy")
    dry = import_files(store, [path], profile="copy", dry_run=True)
    assert dry.files[0].status == "would add"
    assert store.get_profile("copy").current_version_id is None
    summary = import_files(store, [path], profile="copy")
    assert (summary.files[0].format, summary.files[0].status) == ("lpm-bundle", "added")
    assert store.get_profile("copy").current_version_id is not None


def _rewrite(path: Path, change) -> None:
    """Rewrite a bundle with ``change(members)`` applied and the manifest left as it was."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda m: m.__setitem__("slots.json", m["slots.json"].replace(b"usage", b"usagf")),
            "does not match the sha256",
        ),
        (
            lambda m: m.__setitem__("slots.json", b'{"labels": {}, "usage": {"x": 1}}'),
            "member size differs from the manifest",
        ),
        (lambda m: m.__setitem__("extra.txt", b"hi"), "unexpected member 'extra.txt'"),
        (lambda m: m.pop("audit.jsonl"), "member 'audit.jsonl' is missing"),
        (
            lambda m: m.__setitem__(
                "manifest.json",
                m["manifest.json"].replace(b'"format_version": 1', b'"format_version": 7'),
            ),
            "format version 7 is not supported",
        ),
        (
            lambda m: m.__setitem__("manifest.json", b'{"format": "lpm-bundle", "format": 1}'),
            "duplicate key",
        ),
    ],
    ids=[
        "tampered",
        "resized",
        "unknown-member",
        "missing-member",
        "newer-format",
        "duplicate-key",
    ],
)
def test_damaged_bundles_are_refused(store, out, change, message):
    add_memory(store, store.active_profile().id)
    path = export_bundle(store, out / "me.lpm").path
    _rewrite(path, change)
    before = store.list_memory_versions(store.active_profile().id)
    with pytest.raises(BadBundle, match=message):
        import_bundle(store, path, profile="fresh")
    assert store.list_memory_versions(store.active_profile().id) == before
    assert [p.name for p in store.list_profiles()] == ["default"]


# -- R9: export -> wipe -> import, property-based --------------------------------------------


def _round_trip(n_slots: int, dim: int, dtype: torch.dtype, seed: int, work: Path) -> None:
    gen = torch.Generator().manual_seed(seed)
    slots = (torch.randn(n_slots, dim, generator=gen) * 3).to(dtype)
    flat = slots.view(-1)
    flat[0] = -0.0  # sign of zero and subnormals must survive too
    if flat.numel() > 1:
        flat[1] = torch.finfo(dtype).tiny / 4
    data = work / "data"  # the wipe sweeps this dir: the bundle lives outside it
    with Store.open(data / "db.sqlite3") as store:
        profile = store.active_profile()
        version = add_memory(store, profile.id, n_slots=n_slots, dim=dim, slots=slots)
        conv = store.create_conversation(profile.id, f"chat {seed}")
        store.add_message(conv.id, "user", f"fact {seed}: {TRICKY[seed % len(TRICKY)]}")
        chats = _chats(store, profile.id)
        bundle = export_bundle(store, work / "b.lpm", with_history=True, overwrite=True).path
        wipe(store, WipeScope("all"), data_dir=data)
        import_bundle(store, bundle)
        current = store.current_memory_version(store.active_profile().id)
        assert current.tensors == version.tensors
        restored, config = slots_from_bytes(current.tensors)
        assert restored.dtype == dtype and (config.n_slots, config.slot_dim) == (n_slots, dim)
        assert torch.equal(
            restored.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
            slots.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
        )
        assert current.config_json == version.config_json
        assert _chats(store, store.active_profile().id) == chats


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_slots=st.integers(1, 256),
    dim=st.sampled_from([8, 64, 576, 1024, 4096]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_bit_for_bit(tmp_path_factory, n_slots, dim, dtype, seed):
    _round_trip(n_slots, dim, dtype, seed, tmp_path_factory.mktemp("r9"))


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_slots=st.integers(1, 256),
    dim=st.integers(8, 4096),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_bit_for_bit_many(tmp_path_factory, n_slots, dim, dtype, seed):
    _round_trip(n_slots, dim, dtype, seed, tmp_path_factory.mktemp("r9"))
