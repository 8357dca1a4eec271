"""Turning "the disk is full" (and other storage failures a person can fix) into one line.

SQLite reports a full disk as ``SQLITE_FULL`` ("database or disk is full"); a file-size limit
(``ulimit -f``, a quota) or a failing disk as ``SQLITE_IOERR`` ("disk I/O error"); files the app
writes itself fail with ``OSError`` ``ENOSPC``/``EDQUOT``/``EFBIG``. In every case the
transaction was rolled back, so nothing is half-written: the person needs to know what happened
and what to do, not a traceback.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from lpm_local.errors import LpmError

_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL = 8, 10, 13
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StorageFailed(LpmError):
    """The disk is full, over a quota or a size limit, or failing; nothing was half-written."""


def storage_error(error: BaseException, where: Path | str) -> StorageFailed | None:
    """The one-line error for ``error`` if it is a storage failure, else None (a bug)."""
    advice = (
        "nothing was half-written. Free some space there (or raise the quota / `ulimit -f`) "
        "and run the command again"
    )
    if isinstance(error, sqlite3.OperationalError):
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL:
            return StorageFailed(f"{where}: the disk is full; {advice}")
        if code == _SQLITE_READONLY:
            return StorageFailed(
                f"{where}: the database is read-only ({error}); nothing was written. Check the "
                "permissions of the database and its directory (they should be yours)"
            )
        if code == _SQLITE_IOERR:
            return StorageFailed(
                f"{where}: the database could not be written ({error}): the disk may be full, "
                f"over a quota or a file-size limit, or failing; {advice}"
            )
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        return StorageFailed(f"{where}: {error.strerror}; {advice}")
    return None
