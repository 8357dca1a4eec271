"""The ``.lpm`` bundle's layout: its manifest, its members and how they are read back safely.

A bundle is a zip::

    manifest.json         format, format_version, created_at, profile, backbone, projector
                          sha256, memory (sha256, config, losses) and {member: sha256, size}
    memory.safetensors    the current memory version's blob exactly as stored (slots +
                          str->str metadata); absent when the profile had no memory yet
    slots.json            per-slot labels and usage (may be empty)
    audit.jsonl           the profile's audit log, one JSON object per line
    conversations.jsonl   only with --with-history: one conversation (with messages) per line

Everything read from a bundle is untrusted (a bundle is a file anyone can hand over): the manifest
is parsed strictly (duplicate keys, NaN, deep nesting, wrong types refused), every member must be
listed in it with its size and sha256, unknown members are refused, each member has a size cap, and
bytes are hashed as they are read so that a member that does not match its manifest entry is
refused. Tensors are only ever parsed by ``lpm_local.memory.tensorio`` (safetensors with limits;
never pickle).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lpm_local.data.importers.base import ImportLimits
from lpm_local.data.importers.safe_zip import SafeZip, is_zip
from lpm_local.errors import BadBundle

FORMAT = "lpm-bundle"  # the same string as importers.BUNDLE_FORMAT (detect.py sniffs it)
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
MEMORY = "memory.safetensors"
SLOTS = "slots.json"
AUDIT = "audit.jsonl"
CONVERSATIONS = "conversations.jsonl"

_MIB = 1 << 20
# Per-member caps. The largest memory the app makes is 256 slots x 4096 x fp32 = 4 MiB; 256 MiB
# leaves room for bigger configs and still bounds what a hostile bundle can make us hold.
MEMBER_CAPS = {
    MANIFEST: _MIB,
    MEMORY: 256 * _MIB,
    SLOTS: 16 * _MIB,
    AUDIT: 64 * _MIB,
    CONVERSATIONS: 4096 * _MIB,  # streamed, never held whole
}
# A bundle has at most 5 members: anything with more entries is refused from its directory.
LIMITS = ImportLimits(max_member_bytes=max(MEMBER_CAPS.values()), max_zip_members=16)
# Temp files of an export in progress: ".<target name>.<random>.lpm-partial" (wipe removes them).
PARTIAL_SUFFIX = ".lpm-partial"
# One conversation per line: as big as the importers' biggest record.
MAX_LINE_BYTES = 256 * _MIB
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_READ_CHUNK = _MIB


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant)


def parse_json(data: bytes | str, where: str) -> Any:
    """Strict JSON of an untrusted member (duplicate keys, NaN, absurd nesting refused)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = _DECODER.decode(text)
    except UnicodeDecodeError:
        raise BadBundle("not UTF-8 text", where=where) from None
    except RecursionError:
        raise BadBundle("JSON nested too deeply", where=where) from None
    except ValueError as exc:
        raise BadBundle(f"invalid JSON ({str(exc).splitlines()[0][:80]})", where=where) from None
    return value


def field_of(
    obj: dict, key: str, kinds: tuple[type, ...], where: str, *, required: bool = True
) -> Any:
    """``obj[key]`` if it has one of ``kinds`` (None allowed when not required), else BadBundle."""
    if key not in obj:
        if required:
            raise BadBundle(f"missing field {key!r}", where=where)
        return None
    value = obj[key]
    if value is None and not required:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise BadBundle(f"field {key!r} has the wrong type (a boolean)", where=where)
    if not isinstance(value, kinds):
        raise BadBundle(f"field {key!r} has the wrong type ({type(value).__name__})", where=where)
    return value


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class MemberInfo:
    sha256: str
    size: int


@dataclass(frozen=True)
class MemoryInfo:
    """The exported memory version's row, minus what is local to one database (ids)."""

    sha256: str
    config_json: str | None
    created_at: str | None
    reason: str | None
    train_loss: float | None
    heldout_loss: float | None


@dataclass(frozen=True)
class Manifest:
    created_at: str
    profile_name: str
    profile_note: str | None
    backbone: str | None
    projector_sha256: str | None
    memory: MemoryInfo | None
    with_history: bool
    members: dict[str, MemberInfo] = field(default_factory=dict)
    app_version: str | None = None
    format_version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        data = {"format": FORMAT, **asdict(self)}
        return json.dumps(data, indent=1, sort_keys=True, allow_nan=False).encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        obj = parse_json(data, where)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise BadBundle("not an lpm bundle manifest (format is not 'lpm-bundle')", where=where)
        version = field_of(obj, "format_version", (int,), where)
        if version != FORMAT_VERSION:
            raise BadBundle(
                f"bundle format version {version} is not supported (this lpm reads "
                f"version {FORMAT_VERSION})",
                where=where,
                hint="update lpm",
            )
        known = {"format", *cls.__dataclass_fields__}
        if unknown := sorted(set(obj) - known):
            raise BadBundle(f"unknown manifest fields {unknown[:5]}", where=where)
        return cls(
            created_at=field_of(obj, "created_at", (str,), where),
            profile_name=field_of(obj, "profile_name", (str,), where),
            profile_note=field_of(obj, "profile_note", (str,), where, required=False),
            backbone=field_of(obj, "backbone", (str,), where, required=False),
            projector_sha256=field_of(obj, "projector_sha256", (str,), where, required=False),
            memory=_memory_info(field_of(obj, "memory", (dict,), where, required=False), where),
            with_history=field_of(obj, "with_history", (bool,), where),
            members=_members(field_of(obj, "members", (dict,), where), where),
            app_version=field_of(obj, "app_version", (str,), where, required=False),
            format_version=version,
        )


def _memory_info(obj: dict | None, where: str) -> MemoryInfo | None:
    if obj is None:
        return None
    where = f"{where}: memory"
    sha = field_of(obj, "sha256", (str,), where)
    if not _SHA256.match(sha):
        raise BadBundle("memory sha256 is not a sha256 digest", where=where)
    losses = [
        field_of(obj, k, (int, float), where, required=False)
        for k in ("train_loss", "heldout_loss")
    ]
    return MemoryInfo(
        sha256=sha,
        config_json=field_of(obj, "config_json", (str,), where, required=False),
        created_at=field_of(obj, "created_at", (str,), where, required=False),
        reason=field_of(obj, "reason", (str,), where, required=False),
        train_loss=finite_or_none(losses[0]),
        heldout_loss=finite_or_none(losses[1]),
    )


def _members(obj: dict, where: str) -> dict[str, MemberInfo]:
    members = {}
    for name, entry in obj.items():
        if name not in MEMBER_CAPS or name == MANIFEST:
            raise BadBundle(f"unknown member {name[:60]!r} in the manifest", where=where)
        place = f"{where}: members.{name}"
        if not isinstance(entry, dict):
            raise BadBundle("member entry is not an object", where=place)
        sha = field_of(entry, "sha256", (str,), place)
        size = field_of(entry, "size", (int,), place)
        if not _SHA256.match(sha) or not 0 <= size <= MEMBER_CAPS[name]:
            raise BadBundle("member entry has a bad sha256 or size", where=place)
        members[name] = MemberInfo(sha, size)
    return members


class MemberReader:
    """Reads one member's bytes, hashing them; ``verify()`` compares with the manifest entry."""

    def __init__(self, stream: BinaryIO, where: str, expected: MemberInfo):
        self._stream, self.where, self._expected = stream, where, expected
        self._digest = hashlib.sha256()
        self._size = 0

    @property
    def fraction(self) -> float:
        """How much of the member has been read (for progress)."""
        return self._size / self._expected.size if self._expected.size else 1.0

    def read(self, size: int = _READ_CHUNK) -> bytes:
        data = self._stream.read(size)
        self._digest.update(data)
        self._size += len(data)
        if self._size > self._expected.size:
            raise BadBundle("member is larger than its manifest entry says", where=self.where)
        return data

    def read_all(self) -> bytes:
        parts = []
        while chunk := self.read():
            parts.append(chunk)
        self.verify()
        return b"".join(parts)

    def lines(self, max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
        """(line number, line without newline) for non-empty lines; verifies at the end."""
        pending: list[bytes] = []  # pieces of the current, unfinished line
        pending_size = number = 0
        while chunk := self.read():
            # Split only the new chunk: re-splitting a growing buffer is quadratic in a long line.
            *complete, rest = chunk.split(b"\n")
            for piece in complete:
                line = b"".join(pending) + piece if pending else piece
                pending, pending_size = [], 0
                number += 1
                if line.strip():
                    yield number, line
            pending.append(rest)
            pending_size += len(rest)
            if pending_size > max_line:
                raise BadBundle(
                    f"line {number + 1} is longer than {max_line:,} bytes", where=self.where
                )
        last = b"".join(pending)
        if last.strip():
            yield number + 1, last
        self.verify()

    def verify(self) -> None:
        if self._size != self._expected.size or self._digest.hexdigest() != self._expected.sha256:
            raise BadBundle(
                "member does not match the sha256 in the manifest (damaged or altered bundle)",
                where=self.where,
            )


def read_manifest(path: Path) -> Manifest | None:
    """The manifest of a bundle at ``path``, None if it is not a zip with one. Reads nothing
    else (wipe must recognise a bundle even when its other members are damaged)."""
    with open(path, "rb") as fh:
        if not is_zip(fh.read(4)):
            return None
    archive = SafeZip(path, LIMITS)
    try:
        if MANIFEST not in archive.names() or archive.size(MANIFEST) > MEMBER_CAPS[MANIFEST]:
            return None
        with archive.open(MANIFEST) as raw:
            return Manifest.parse(raw.read(MEMBER_CAPS[MANIFEST] + 1), path.name)
    finally:
        archive.close()
