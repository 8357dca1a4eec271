"""``.lpm`` bundle export: a profile's memory (and, on request, its chats) into one zip file.

The bundle is written to a temp file in the target directory (mode 0600 from the start),
fsynced, renamed over the target and the directory fsynced: a crash leaves the old file or the
new one, never half a bundle under the target name. Members are the memory blob byte for byte
(stored, not deflated), ``slots.json``, the audit log, the chats when asked, and the manifest
that ``restore.py`` checks everything against (``format.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lpm_local import __version__
from lpm_local.data.bundle.format import (
    AUDIT,
    CONVERSATIONS,
    LIMITS,
    MANIFEST,
    MEMORY,
    PARTIAL_SUFFIX,
    SLOTS,
    Manifest,
    MemberInfo,
    MemoryInfo,
    finite_or_none,
)
from lpm_local.data.bundle.history import conversation_line
from lpm_local.data.sources import Progress, check_cancel
from lpm_local.errors import BadInput
from lpm_local.memory.slots import slots_from_bytes
from lpm_local.storage.records import MemoryVersion, Profile, utc_now
from lpm_local.storage.store import Store

# Deflated members must stay under the zip-bomb ratio the reader enforces, or our own bundle
# would be refused.
_MAX_RATIO, _RATIO_FLOOR = LIMITS.max_compression_ratio, 1 << 20
_MEMBER_MODE = (stat.S_IFREG | 0o600) << 16


@dataclass(frozen=True)
class ExportResult:
    path: Path
    profile: str
    memory_version: int | None
    conversations: int
    messages: int
    n_bytes: int


def export_bundle(
    store: Store,
    path: Path | str,
    *,
    profile: str | None = None,
    with_history: bool = False,
    overwrite: bool = False,
    slot_info: dict[str, Any] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ExportResult:
    """Write ``profile``'s (default: the active one's) current memory to an ``.lpm`` bundle.

    ``slot_info`` (labels, usage) goes to ``slots.json``. Chats go in only ``with_history``.
    Refuses to replace an existing file unless ``overwrite``.
    """
    target = Path(path).expanduser()
    owner = store.active_profile() if profile is None else store.get_profile(profile)
    version = store.current_memory_version(owner.id)
    if version is None and not with_history:
        raise BadInput(
            f"profile '{owner.name}' has no memory yet: nothing to export",
            hint="chat or import first, or export its chats with --with-history",
        )
    if version is not None:
        slots_from_bytes(version.tensors or b"", where=f"memory version #{version.id}")
    _check_target(target, overwrite)
    info = {"labels": {}, "usage": {}} if slot_info is None else slot_info
    counts = [0, 0]

    def write(fh: BinaryIO, history_compression: int) -> None:
        counts[:] = _write_zip(
            fh, store, owner, version, info, with_history, history_compression, progress, cancel
        )

    n_bytes = _write_atomically(target, write)
    store.audit(
        owner.id,
        "export",
        f"bundle: memory version {version.id if version else None}, "
        f"{counts[0]} conversations, {counts[1]} messages",
    )
    return ExportResult(target, owner.name, version.id if version else None, *counts, n_bytes)


def _check_target(target: Path, overwrite: bool) -> None:
    if not target.parent.is_dir():
        raise BadInput("the directory does not exist", where=str(target.parent))
    if target.exists() and (not overwrite or not target.is_file()):
        raise BadInput(
            "already exists",
            where=str(target),
            hint="choose another name, or pass --force to replace it",
        )


def _write_atomically(target: Path, write: Callable[[BinaryIO, int], None]) -> int:
    """Temp file (0600) in the target dir -> fsync -> rename -> fsync dir; returns the size."""
    for compression in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX
        )
        try:
            os.fchmod(fd, 0o600)  # mkstemp already uses 0600; say it, whatever the platform
            with os.fdopen(fd, "w+b") as fh:
                write(fh, compression)
                fh.flush()
                os.fsync(fh.fileno())
                size = fh.tell()
            os.replace(tmp, target)
        except _TooCompressible:
            os.unlink(tmp)
            continue
        except BaseException:
            os.unlink(tmp)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return size
    raise AssertionError("a stored (uncompressed) member always passes the ratio check")


class _TooCompressible(Exception):
    """The history deflated past the zip-bomb ratio the importer enforces: store it instead."""


def _write_zip(
    fh: BinaryIO,
    store: Store,
    owner: Profile,
    version: MemoryVersion | None,
    slot_info: dict,
    with_history: bool,
    history_compression: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> tuple[int, int]:
    members: dict[str, MemberInfo] = {}
    counts = (0, 0)
    with zipfile.ZipFile(fh, "w") as zf:
        if version is not None:
            # Stored, not deflated: float bits barely compress, and the bytes stay greppable.
            members[MEMORY] = _put(zf, MEMORY, version.tensors or b"", zipfile.ZIP_STORED)
        slots = json.dumps(slot_info, sort_keys=True, allow_nan=False).encode()
        members[SLOTS] = _put(zf, SLOTS, slots, zipfile.ZIP_DEFLATED)
        audit = b"".join(
            json.dumps({"at": a.at, "action": a.action, "detail": a.detail}).encode() + b"\n"
            for a in store.list_audit(owner.id)
        )
        members[AUDIT] = _put(zf, AUDIT, audit, zipfile.ZIP_DEFLATED)
        if with_history:
            members[CONVERSATIONS], counts = _put_history(
                zf, store, owner, history_compression, progress, cancel
            )
        manifest = _manifest(owner, version, with_history, members)
        zf.writestr(_zip_info(MANIFEST, zipfile.ZIP_DEFLATED), manifest.to_bytes())
    return counts


def _manifest(
    owner: Profile,
    version: MemoryVersion | None,
    with_history: bool,
    members: dict[str, MemberInfo],
) -> Manifest:
    memory = (
        None
        if version is None
        else MemoryInfo(
            sha256=version.sha256,
            config_json=version.config_json,
            created_at=version.created_at,
            reason=version.reason,
            train_loss=finite_or_none(version.train_loss),
            heldout_loss=finite_or_none(version.heldout_loss),
        )
    )
    return Manifest(
        created_at=utc_now(),
        profile_name=owner.name,
        profile_note=owner.note,
        backbone=version.backbone if version else None,
        projector_sha256=version.projector_sha256 if version else None,
        memory=memory,
        with_history=with_history,
        members=members,
        app_version=__version__,
    )


def _zip_info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compression
    info.external_attr = _MEMBER_MODE
    return info


def _put(zf: zipfile.ZipFile, name: str, data: bytes, compression: int) -> MemberInfo:
    zf.writestr(_zip_info(name, compression), data)
    return MemberInfo(hashlib.sha256(data).hexdigest(), len(data))


def _put_history(
    zf: zipfile.ZipFile,
    store: Store,
    owner: Profile,
    compression: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> tuple[MemberInfo, tuple[int, int]]:
    digest, size, n_messages = hashlib.sha256(), 0, 0
    conversations = sorted(store.list_conversations(owner.id), key=lambda c: (c.created_at, c.id))
    info = _zip_info(CONVERSATIONS, compression)
    with zf.open(info, "w", force_zip64=True) as out:
        for index, conversation in enumerate(conversations):
            check_cancel(cancel)
            messages = store.messages(conversation.id)
            line = conversation_line(conversation, messages)
            out.write(line)
            digest.update(line)
            size += len(line)
            n_messages += len(messages)
            if progress is not None:
                progress("exporting chats", (index + 1) / len(conversations))
    if info.file_size > _RATIO_FLOOR and info.file_size / max(info.compress_size, 1) > _MAX_RATIO:
        raise _TooCompressible()
    return MemberInfo(digest.hexdigest(), size), (len(conversations), n_messages)
