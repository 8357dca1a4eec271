"""Opening an ``.lpm`` bundle for import: every check that can run before the store is touched.

The zip itself is vetted by ``importers.safe_zip.SafeZip`` (member count and directory size,
zip-slip and duplicate names, encryption, declared sizes and compression ratio, output counted
while inflating); on top of that a bundle must hold exactly the members its manifest lists, each
within its cap and matching its sha256, and its memory must parse as slots of the shape, dtype
and finiteness its own config says (``memory.slots.slots_from_bytes``: safetensors only, never
pickle). The history is checked as it streams, inside the import's transaction.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from lpm_local.data.bundle.fields_check import check_backbone, checked_config
from lpm_local.data.bundle.format import (
    AUDIT,
    CONVERSATIONS,
    LIMITS,
    MANIFEST,
    MEMBER_CAPS,
    MEMORY,
    SLOTS,
    Manifest,
    MemberReader,
    MemoryInfo,
    parse_json,
)
from lpm_local.data.importers.safe_zip import SafeZip, is_zip
from lpm_local.errors import BadBundle, BadInput
from lpm_local.memory.slots import slots_from_bytes


@dataclass
class OpenBundle:
    """A bundle whose manifest, memory, slots and audit members passed every check."""

    path: Path
    archive: SafeZip
    manifest: Manifest
    blob: bytes | None

    def history(self) -> MemberReader | None:
        if CONVERSATIONS not in self.manifest.members:
            return None
        return self._reader(CONVERSATIONS)

    def _reader(self, name: str) -> MemberReader:
        expected = self.manifest.members[name]
        where = f"{self.path.name}/{name}"
        if self.archive.size(name) != expected.size:
            raise BadBundle("member size differs from the manifest", where=where)
        return MemberReader(self.archive.open(name), where, expected)

    def close(self) -> None:
        self.archive.close()

    def __enter__(self) -> OpenBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bundle(path: Path | str) -> OpenBundle:
    """Open and check a bundle (everything but the history, which is checked as it streams)."""
    path = Path(path)
    _check_file(path)
    archive = SafeZip(path, LIMITS)
    try:
        names = set(archive.names())
        if MANIFEST not in names:
            raise BadBundle("no manifest.json: not an lpm bundle", where=path.name)
        if archive.size(MANIFEST) > MEMBER_CAPS[MANIFEST]:
            raise BadBundle("manifest.json is too large", where=path.name)
        with archive.open(MANIFEST) as raw:
            data = raw.read(MEMBER_CAPS[MANIFEST] + 1)
        manifest = Manifest.parse(data, f"{path.name}/{MANIFEST}")
        check_backbone(manifest.backbone, f"{path.name}/{MANIFEST}")
        _check_members(path, names, manifest)
        bundle = OpenBundle(path, archive, manifest, None)
        if manifest.memory is not None:
            bundle.blob = _read_memory(bundle, manifest.memory)
        slots = parse_json(bundle._reader(SLOTS).read_all(), f"{path.name}/{SLOTS}")
        if not isinstance(slots, dict):
            raise BadBundle("slots.json is not a JSON object", where=f"{path.name}/{SLOTS}")
        reader = bundle._reader(AUDIT)
        for number, line in reader.lines():
            if not isinstance(parse_json(line, f"{reader.where}: line {number}"), dict):
                raise BadBundle(
                    "audit entry is not a JSON object", where=f"{reader.where}: line {number}"
                )
        return bundle
    except BaseException:
        archive.close()
        raise


def _check_file(path: Path) -> None:
    try:
        info = path.stat()
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise BadInput("no such file", where=str(path)) from None
    except OSError as exc:
        raise BadInput(f"cannot read ({exc.strerror})", where=str(path)) from None
    if not stat.S_ISREG(info.st_mode) or not is_zip(head):
        looks_pickled = head[:1] == b"\x80"  # PROTO: how pickles (protocol >= 2) start
        kind = " (it looks like a Python pickle, which is never loaded)" if looks_pickled else ""
        raise BadBundle(f"not an .lpm bundle: not a zip archive{kind}", where=path.name)


def _check_members(path: Path, names: set[str], manifest: Manifest) -> None:
    present, listed = names - {MANIFEST}, set(manifest.members)
    if unknown := sorted(present - set(MEMBER_CAPS)):
        raise BadBundle(f"unexpected member {unknown[0][:60]!r}", where=path.name)
    required = (
        {SLOTS, AUDIT}
        | ({MEMORY} if manifest.memory else set())
        | ({CONVERSATIONS} if manifest.with_history else set())
    )
    if missing := sorted((required | listed) - present):
        raise BadBundle(f"member {missing[0]!r} is missing", where=path.name)
    if unlisted := sorted(present - listed):
        raise BadBundle(f"member {unlisted[0]!r} is not listed in the manifest", where=path.name)
    if unexpected := sorted(listed - required):
        raise BadBundle(
            f"member {unexpected[0]!r} contradicts the manifest's memory/with_history",
            where=path.name,
        )


def _read_memory(bundle: OpenBundle, memory: MemoryInfo) -> bytes:
    blob = bundle._reader(MEMORY).read_all()
    where = f"{bundle.path.name}/{MEMORY}"
    if bundle.manifest.members[MEMORY].sha256 != memory.sha256:
        raise BadBundle("memory sha256 differs from the member's", where=where)
    # Shape, dtype, finiteness vs its own config; no pickle.
    _, blob_config = slots_from_bytes(blob, where=where)
    # The manifest's copy is what gets stored as the version's config: it must be valid and
    # say the same as the blob (the blob's own, when the manifest has none).
    manifest_where = f"{bundle.path.name}/{MANIFEST}"
    checked_config(blob_config.to_json(), where)
    if memory.config_json is not None:
        if checked_config(memory.config_json, manifest_where) != blob_config:
            raise BadBundle(
                "memory.config_json differs from the memory blob's own config",
                where=manifest_where,
            )
    return blob
