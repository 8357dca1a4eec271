"""Hostile memory bundles (R10): each refused with its own message, fast, with no side effect.

Every hostile bundle here is otherwise well formed (a manifest listing each member with its true
size and sha256), so it is the attack itself that must be caught, not a hash mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from builders import slots_config

from lpm_local.data.bundle.format import Manifest, MemberInfo, MemoryInfo
from lpm_local.data.bundle.restore import import_bundle
from lpm_local.errors import BadInput
from lpm_local.memory.slots import slots_to_bytes
from lpm_local.memory.tensorio import tensors_to_bytes
from lpm_local.storage.store import Store

CONFIG = slots_config(4, 16)


class _Touch:
    """Unpickling this creates ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _pickle_payload(sentinel: Path) -> bytes:
    return pickle.dumps(_Touch(sentinel))


def _torch_save_payload(sentinel: Path, tmp: Path) -> bytes:
    torch.save({"slots": _Touch(sentinel)}, tmp / "payload.pt")
    return (tmp / "payload.pt").read_bytes()


def _slots_blob(tensor: torch.Tensor) -> bytes:
    """A blob with the slots metadata of CONFIG around any tensor (shape/dtype unchecked)."""
    metadata = {"format": "lpm-slots/1", "memory_config": CONFIG.to_json()}
    return tensors_to_bytes({"slots": tensor}, metadata)


def _good_blob() -> bytes:
    return slots_to_bytes(torch.randn(4, 16), CONFIG)


def _with_header_length(blob: bytes, length: int) -> bytes:
    return struct.pack("<Q", length) + blob[8:]


def _huge_header_blob() -> bytes:
    header = json.dumps({"__metadata__": {"pad": "x" * (2 << 20)}}).encode()
    return struct.pack("<Q", len(header)) + header


def make_bundle(
    path: Path,
    memory: bytes | None,
    *,
    history: bytes | None = None,
    extra: dict[str, bytes] | None = None,
    manifest: bytes | None = None,
    compress: int = zipfile.ZIP_STORED,
    profile_name: str = "victim",
) -> Path:
    """A bundle whose manifest truthfully lists ``memory`` (and ``history``) by size and sha256."""
    members = {"slots.json": b"{}", "audit.jsonl": b""}
    if memory is not None:
        members["memory.safetensors"] = memory
    if history is not None:
        members["conversations.jsonl"] = history
    infos = {n: MemberInfo(hashlib.sha256(d).hexdigest(), len(d)) for n, d in members.items()}
    memory_info = (
        None
        if memory is None
        else MemoryInfo(
            infos["memory.safetensors"].sha256, CONFIG.to_json(), None, None, None, None
        )
    )
    if manifest is None:
        manifest = Manifest(
            "2026-01-01T00:00:00+00:00",
            profile_name,
            None,
            "smollm2-135m",
            None,
            memory_info,
            history is not None,
            infos,
        ).to_bytes()
    with zipfile.ZipFile(path, "w", compress) as zf:
        zf.writestr("manifest.json", manifest)
        for name, data in {**members, **(extra or {})}.items():
            zf.writestr(name, data)
    return path


def _state(store: Store, home: Path) -> tuple:
    """Every row of every table, and every file name under LPM_HOME (the db is never opened
    from Python: its content is read through SQLite)."""
    tables = [
        r[0]
        for r in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        )
    ]
    rows = {t: store.conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    return rows, files


# (name, how to build the memory member (sentinel, tmp) -> bytes, expected message)
MEMORY_ATTACKS = [
    ("truncated", lambda s, t: _good_blob()[:-7], r"corrupt safetensors data"),
    (
        "header-longer-than-file",
        lambda s, t: _with_header_length(_good_blob(), 10_000),
        r"header is longer than the file",
    ),
    (
        "huge-header-length",
        lambda s, t: _with_header_length(_good_blob(), 1 << 40),
        r"header of 1099511627776 bytes is too large",
    ),
    ("huge-header", lambda s, t: _huge_header_blob(), r"header of \d+ bytes is too large"),
    ("nan", lambda s, t: _slots_blob(torch.full((4, 16), float("nan"))), r"holds NaN or Inf"),
    ("inf", lambda s, t: _slots_blob(torch.full((4, 16), float("inf"))), r"holds NaN or Inf"),
    (
        "wrong-shape",
        lambda s, t: _slots_blob(torch.zeros(4, 8)),
        r"shape \(4, 8\), expected \(4, 16\)",
    ),
    (
        "wrong-dtype-f64",
        lambda s, t: _slots_blob(torch.zeros(4, 16, dtype=torch.float64)),
        r"dtype torch\.float64",
    ),
    (
        "wrong-dtype-int",
        lambda s, t: _slots_blob(torch.zeros(4, 16, dtype=torch.int32)),
        r"dtype torch\.int32",
    ),
    (
        "two-tensors",
        lambda s, t: tensors_to_bytes(
            {"slots": torch.zeros(4, 16), "x": torch.zeros(1)},
            {"format": "lpm-slots/1", "memory_config": CONFIG.to_json()},
        ),
        r"expected tensor .slots.",
    ),
    (
        "not-slots-format",
        lambda s, t: tensors_to_bytes({"slots": torch.zeros(4, 16)}, {}),
        r"not a memory slots blob",
    ),
    ("pickle-member", lambda s, t: _pickle_payload(s), r"header of \d+ bytes is too large"),
    (
        "torch-save-member",
        lambda s, t: _torch_save_payload(s, t),
        r"header of \d+ bytes is too large",
    ),
]


@pytest.fixture
def store():
    with Store.open() as s:
        s.active_profile()
        yield s


def _refused(store: Store, home: Path, path: Path, message: str, sentinel: Path) -> None:
    before = _state(store, home)
    started = time.perf_counter()
    with pytest.raises(BadInput, match=message) as caught:
        import_bundle(store, path)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert "\n" not in str(caught.value)
    assert not sentinel.exists()
    assert _state(store, home) == before


def test_the_pickle_payloads_are_live(tmp_path):
    """The attack is real: unpickling the payload does create its file."""
    target = tmp_path / "would-be-created"
    pickle.loads(_pickle_payload(target))
    assert target.exists()


@pytest.mark.parametrize("name, build, message", MEMORY_ATTACKS, ids=[a[0] for a in MEMORY_ATTACKS])
def test_hostile_memory_member(store, lpm_home, tmp_path, name, build, message):
    sentinel = tmp_path / "sentinel"
    path = make_bundle(tmp_path / f"{name}.lpm", build(sentinel, tmp_path))
    _refused(store, lpm_home, path, rf"memory\.safetensors: .*{message}", sentinel)


@pytest.mark.parametrize("suffix", [".safetensors", ".lpm"])
def test_pickle_file_given_as_the_bundle(store, lpm_home, tmp_path, suffix):
    sentinel = tmp_path / "sentinel"
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(_pickle_payload(sentinel))
    _refused(store, lpm_home, path, r"not a zip archive \(it looks like a Python pickle", sentinel)


def test_torch_save_file_given_as_the_bundle(store, lpm_home, tmp_path):
    sentinel = tmp_path / "sentinel"
    path = tmp_path / "evil.lpm"
    path.write_bytes(_torch_save_payload(sentinel, tmp_path))
    _refused(store, lpm_home, path, r"no manifest\.json: not an lpm bundle", sentinel)


def _line(**changes) -> bytes:
    conversation = {
        "title": "t",
        "created_at": "2024-01-01T00:00:00+00:00",
        "exclude_from_memory": False,
        "source_ref": None,
        "messages": [
            {
                "role": "user",
                "content": "hi",
                "source_ref": None,
                "created_at": "2024-01-01T00:00:01+00:00",
            }
        ],
    }
    message = conversation["messages"][0]
    for key, value in changes.items():
        (message if key in message else conversation)[key] = value
    return json.dumps(conversation).encode() + b"\n"


HISTORY_ATTACKS = [
    ("lone-surrogate", _line() + _line(content="\ud800"), r"line 2: .*lone surrogate"),
    ("bad-role", _line() * 3 + _line(role="tool"), r"line 4: .*invalid role 'tool'"),
    ("bad-timestamp", _line(created_at="yesterday"), r"line 1: .*not an ISO 8601"),
    ("unknown-field", _line(evil=1), r"line 1: unknown conversation field 'evil'"),
    ("not-json", _line() + b"{nope\n", r"line 2: invalid JSON"),
    ("deep-nesting", b"[" * 100_000 + b"]" * 100_000 + b"\n", r"line 1: JSON nested too deeply"),
    ("wrong-type", _line(messages="hi"), r"line 1: field 'messages' has the wrong type"),
]


@pytest.mark.parametrize(
    "name, history, message", HISTORY_ATTACKS, ids=[a[0] for a in HISTORY_ATTACKS]
)
def test_hostile_history_is_refused_after_partial_writes(
    store, lpm_home, tmp_path, name, history, message
):
    """Lines before the bad one are written inside the transaction, then rolled back."""
    sentinel = tmp_path / "sentinel"
    path = make_bundle(tmp_path / f"{name}.lpm", _good_blob(), history=history)
    _refused(store, lpm_home, path, rf"conversations\.jsonl: {message}", sentinel)


def _manifest_with(**fields) -> bytes:
    base = json.loads(
        Manifest(
            "2026-01-01T00:00:00+00:00", "victim", None, None, None, None, False, {}
        ).to_bytes()
    )
    base.update(fields)
    return json.dumps(base).encode()


ZIP_ATTACKS = [
    ("zip-slip", dict(extra={"../../evil.sh": b"x"}), r"unsafe member name"),
    ("absolute-name", dict(extra={"/etc/evil": b"x"}), r"unsafe member name"),
    (
        "too-many-members",
        dict(extra={f"m{i}": b"" for i in range(20)}),
        r"central directory too large",
    ),
    ("unknown-member", dict(extra={"payload.pkl": b"x"}), r"unexpected member 'payload\.pkl'"),
    (
        "manifest-nan",
        dict(manifest=b'{"format": "lpm-bundle", "format_version": NaN}'),
        r"NaN is not valid JSON",
    ),
    ("manifest-deep", dict(manifest=b"[" * 50_000 + b"]" * 50_000), r"nested too deeply"),
    ("manifest-huge", dict(manifest=b" " * (2 << 20) + b"{}"), r"manifest\.json is too large"),
    (
        "manifest-wrong-type",
        dict(manifest=_manifest_with(with_history="yes")),
        r"field 'with_history' has the wrong type",
    ),
    ("manifest-bad-name", dict(profile_name="../../root"), r"invalid profile name"),
    ("memory-not-listed", dict(manifest=_manifest_with()), r"'audit\.jsonl' is not listed"),
]


@pytest.mark.parametrize("name, options, message", ZIP_ATTACKS, ids=[a[0] for a in ZIP_ATTACKS])
def test_hostile_archives(store, lpm_home, tmp_path, name, options, message):
    sentinel = tmp_path / "sentinel"
    memory = None if "manifest" in options else _good_blob()
    path = make_bundle(tmp_path / f"{name}.lpm", memory, **options)
    _refused(store, lpm_home, path, message, sentinel)


def test_zip_bomb_member(store, lpm_home, tmp_path):
    bomb = b"\n" * (64 << 20)  # 64 MiB deflating ~1000:1
    path = make_bundle(
        tmp_path / "bomb.lpm", _good_blob(), history=bomb, compress=zipfile.ZIP_DEFLATED
    )
    assert os.path.getsize(path) < 1 << 20
    _refused(store, lpm_home, path, r"looks like a zip bomb", tmp_path / "sentinel")


def test_count_of_hostile_cases():
    """The report quotes this number: keep it honest."""
    cases = len(MEMORY_ATTACKS) + len(HISTORY_ATTACKS) + len(ZIP_ATTACKS) + 2 + 1 + 1
    assert cases >= 30
