"""Every path the app touches, in one place.

All paths derive from platformdirs, or from ``LPM_HOME`` when it is set (tests set it to a temp
dir, and a user can point the whole app at an encrypted volume with it). Nothing else in the code
base builds a path under the user's directories.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs

from lpm_local.errors import BadPath

APP_NAME = "lpm-local"
ENV_HOME = "LPM_HOME"

# The data dir holds personal data; nobody else on the machine may list it.
PRIVATE_DIR_MODE = 0o700
# Every file with personal data in it: database, journal, lock, exports.
PRIVATE_FILE_MODE = 0o600


def home_override() -> Path | None:
    """The ``LPM_HOME`` directory if set: then every path of the app lives under it."""
    value = os.environ.get(ENV_HOME)
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """The private directory holding the database (mode 0700)."""
    home = home_override()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """Re-creatable files: converted model weights. Holds no personal data."""
    home = home_override()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def config_dir() -> Path:
    """The user's settings (``config.toml``); no personal data, but kept private like the rest."""
    home = home_override()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def settings_path() -> Path:
    """The one settings file, read by ``lpm_local.settings``."""
    return config_dir() / "config.toml"


def db_path() -> Path:
    return data_dir() / "lpm.sqlite3"


def lock_path() -> Path:
    """The lock file held by the one interactive instance (``storage.instance``)."""
    return data_dir() / "lpm.lock"


def model_cache_dir(name: str) -> Path:
    """Where a converted backbone (e.g. SmolLM2 from its GGUF) is kept as safetensors."""
    return cache_dir() / "models" / name


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and force it to 0700, whatever the umask.

    ``BadPath`` (one line) when it cannot be a directory: ``LPM_HOME=/dev/null``, a file in
    the way, a parent that cannot be written. A symlink to a directory is used as it is: its
    target's mode is the user's choice (an encrypted volume, say).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadPath(
            f"{path}: cannot create the data directory ({exc.strerror}). Point {ENV_HOME} at a "
            "directory you can write, or fix the parent's permissions"
        ) from None
    if not path.is_symlink():
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 if it does not exist, before anyone else writes it;
    True when this call created it.

    SQLite and ``open()`` create files with the umask (0644 by default); creating the file
    first with ``O_CREAT | O_EXCL`` and mode 0600 closes that window. An existing file is never
    truncated; its mode is tightened only when it is a regular file of this user (one the app
    made in an earlier run): a symlink's target belongs to whoever made the link, and is left
    alone. Anything but a file at ``path`` (a directory, a device) is ``BadPath``.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
        os.close(fd)
        return True
    except FileExistsError:
        pass
    except OSError as exc:
        raise BadPath(f"{path}: cannot create the file ({exc.strerror})") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        if not path.is_file():
            raise BadPath(f"{path}: a symlink to something that is not a file; remove it")
        return False
    if stat.S_ISDIR(info.st_mode):
        raise BadPath(
            f"{path}: a directory is where this file should be; it was not changed. Move it "
            f"aside (mv '{path}' '{path}.moved') and try again"
        )
    if not stat.S_ISREG(info.st_mode):
        raise BadPath(f"{path}: not a regular file; it was not changed. Move it aside")
    if info.st_uid == os.getuid():
        os.chmod(path, PRIVATE_FILE_MODE)
    return False


def write_private_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a 0600 temp file in the same dir and ``os.replace``.

    A crash leaves the old file or the new one, never half of either; the temp file is created
    0600 before any byte is written, so the content is never readable by others.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
