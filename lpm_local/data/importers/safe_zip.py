"""Reading members of an untrusted zip archive without extracting anything.

Checks, before a byte is decompressed: the central directory is of a sane size (``zipfile``
would build one object per entry, so a crafted directory of millions of entries is refused from
its end record); no member name is absolute, has a drive letter or a ``..`` component (zip-slip:
a legitimate export never has one, so the whole archive is refused); no duplicate names; and for
each member read: not encrypted, declared size and compression ratio under the limits (zip
bombs), total read under the limit. While reading, the bytes produced are counted again, so a
member that lies about its size is cut off.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from lpm_local.errors import BadInput

from .base import ImportLimits
from .fields import short

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_EOCD_SEARCH = 65_535 + 22  # the end record sits within the last 64 KiB (its comment) + 22
# Central directory entries are ~50-200 bytes; allow 512 per permitted member.
_CD_BYTES_PER_MEMBER = 512
_RATIO_FLOOR = 1 << 20  # members under 1 MiB cannot be a bomb, whatever their ratio
_DRIVE = re.compile(r"[A-Za-z]:")
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)
_LIMIT_HINT = "raise ImportLimits.{} if this archive is trusted"


def is_zip(head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", _EOCD))


def unsafe_member_name(name: str) -> bool:
    """True for names that would escape an extraction directory (zip-slip)."""
    norm = name.replace("\\", "/")
    return (
        "\x00" in name
        or norm.startswith("/")
        or bool(_DRIVE.match(norm))
        or ".." in norm.split("/")
    )


class SafeZip:
    """An opened, vetted archive; ``open(name)`` gives a size-checked binary stream."""

    def __init__(self, path: Path, limits: ImportLimits):
        self.name = path.name
        self._limits = limits
        self._read_total = 0
        self._check_directory_size(path)
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            what = f"not a readable zip archive ({short(str(exc), 80)})"
            raise BadInput(what, where=self.name) from None
        if len(infos) > limits.max_zip_members:
            self.close()
            raise self._error(
                "", f"more than {limits.max_zip_members:,} members", "max_zip_members"
            )
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if unsafe_member_name(info.filename) or info.filename in self._infos:
                self.close()
                kind = "unsafe" if unsafe_member_name(info.filename) else "duplicate"
                raise BadInput(
                    f"{kind} member name {info.filename[:80]!r}; refusing the archive",
                    where=self.name,
                    hint="a real export never contains such names",
                )
            self._infos[info.filename] = info

    def _check_directory_size(self, path: Path) -> None:
        entries, directory_bytes = _central_directory(path, self.name)
        if entries > self._limits.max_zip_members or (
            directory_bytes > self._limits.max_zip_members * _CD_BYTES_PER_MEMBER
        ):
            raise self._error("", "central directory too large", "max_zip_members")

    def _error(self, member: str, what: str, limit: str | None = None) -> BadInput:
        where = f"{self.name}/{short(member, 120)}" if member else self.name
        return BadInput(what, where=where, hint=_LIMIT_HINT.format(limit) if limit else None)

    def names(self) -> list[str]:
        """Regular members, without directories and macOS metadata (``__MACOSX/``, ``._x``)."""
        return [
            name
            for name, info in self._infos.items()
            if not info.is_dir()
            and not name.startswith("__MACOSX/")
            and not name.rsplit("/", 1)[-1].startswith(".")
        ]

    def size(self, name: str) -> int:
        return self._infos[name].file_size

    def open(self, name: str) -> BinaryIO:
        info = self._infos[name]
        limits = self._limits
        if info.flag_bits & 0x1:
            raise self._error(name, "member is encrypted")
        if info.file_size > limits.max_member_bytes:
            raise self._error(
                name, f"member of {info.file_size:,} bytes is over the limit", "max_member_bytes"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > limits.max_compression_ratio:
            raise self._error(
                name,
                f"compression ratio {ratio:,.0f}:1 looks like a zip bomb",
                "max_compression_ratio",
            )
        self._read_total += info.file_size
        if self._read_total > limits.max_total_uncompressed_bytes:
            what = "members to read are larger in total than the limit"
            raise self._error(name, what, "max_total_uncompressed_bytes")
        try:
            stream = self._zip.open(info)
        except _READ_ERRORS as exc:
            raise self._error(name, f"cannot read member ({short(str(exc), 80)})") from None
        return _CountedStream(stream, self, name, info.file_size)

    def close(self) -> None:
        zf = getattr(self, "_zip", None)
        if zf is not None:
            zf.close()


class _CountedStream:
    """A member stream that turns decompression errors into BadInput and caps the output."""

    def __init__(self, stream: BinaryIO, owner: SafeZip, name: str, cap: int):
        self._stream, self._owner, self._name, self._cap = stream, owner, name, cap
        self._produced = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except _READ_ERRORS as exc:
            raise self._owner._error(
                self._name, f"corrupt member ({short(str(exc), 80)})"
            ) from None
        self._produced += len(data)
        if self._produced > self._cap:
            raise self._owner._error(self._name, "member is larger than its declared size")
        return data

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> _CountedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _central_directory(path: Path, name: str) -> tuple[int, int]:
    """(declared entry count, central directory bytes) read from the end records."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        start = max(0, size - _EOCD_SEARCH)
        fh.seek(start)
        tail = fh.read()
        at = tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < 22:
            raise BadInput("not a readable zip archive (no end record)", where=name)
        entries, cd_bytes = struct.unpack("<HI", tail[at + 10 : at + 16])
        locator = at - 20
        if locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
            (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
            fh.seek(offset)
            record = fh.read(56)
            if len(record) < 56 or not record.startswith(_ZIP64_EOCD):
                raise BadInput("not a readable zip archive (bad zip64 end record)", where=name)
            entries, cd_bytes = struct.unpack("<QQ", record[32:48])
    return entries, cd_bytes
