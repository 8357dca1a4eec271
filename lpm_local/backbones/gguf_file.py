"""The GGUF file itself, for llama.cpp (the ``[fast]`` extra), of a registry backbone.

A one-file backbone (SmolLM2) is read where its package installed it. A backbone shipped in
parts (Qwen2.5-Coder-0.5B: six PyPI slices) has no such file: the model cache holds only its
safetensors conversion, and the assembled GGUF was deleted after converting, so llama.cpp
would have nothing to load. Here it is assembled once more, verified against the pinned sha256
exactly as for the conversion, and kept next to the converted cache
(``<cache>/models/<name>.gguf``, ~0.5 GB for Qwen2.5-0.5B), with a marker that records the
parts it came from: a new version of the parts is assembled again. Only the decoder asks for
it, so a user without the extra never pays the disk.

Atomic and exclusive like the conversion: written to a temp dir beside the target under an
``flock``, renamed into place, the marker written last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lpm_local import locations
from lpm_local.backbones import gguf_cache, gguf_parts
from lpm_local.backbones.registry import BackboneSpec, registry
from lpm_local.errors import ModelNotAvailable

log = logging.getLogger(__name__)
Progress = Callable[[str, "float | None"], None]


def gguf_file_for(backbone_name: str, *, progress: Progress | None = None) -> Path | None:
    """The GGUF file a registry backbone was converted from, or None: not a GGUF backbone, its
    package (or a part) is gone, or the parts do not match their pinned sha256."""
    spec = registry().get(backbone_name)
    if spec is None or spec.source != "gguf":
        return None
    try:
        if spec.is_multipart:
            return assembled_gguf(spec, progress=progress)
        return gguf_cache.gguf_source(
            spec.gguf_module, spec.gguf_file, install_hint=spec.install_hint
        )
    except ModelNotAvailable as exc:
        log.warning("no GGUF file for %s: %s", backbone_name, exc)
        return None


def assembled_path(name: str) -> Path:
    """Where the assembled GGUF of the multi-part backbone ``name`` is kept."""
    return locations.model_cache_dir(name).with_name(f"{name}.gguf")


def assembled_gguf(
    spec: BackboneSpec, *, target: Path | None = None, progress: Progress | None = None
) -> Path:
    """The assembled, verified GGUF of a multi-part ``spec``, assembling it first if needed.

    Raises ``ModelNotAvailable`` when a part is missing or the concatenation does not match
    the pinned size and sha256 (nothing is kept then)."""
    parts = spec.locate_parts()
    target = Path(target) if target is not None else assembled_path(spec.name)
    if _is_current(target, parts):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with gguf_cache.exclusive(target.parent / f".{target.name}.lock"):
        if _is_current(target, parts):  # another process assembled it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            built = parts.assemble(tmp, progress or (lambda stage, fraction=None: None))
            os.chmod(built, locations.PRIVATE_FILE_MODE)
            _marker(target).unlink(missing_ok=True)  # a stale marker must not vouch for the new
            os.replace(built, target)
            data = json.dumps({"source": parts.fingerprint()}, indent=1).encode()
            locations.write_private_atomic(_marker(target), data)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _marker(target: Path) -> Path:
    return target.with_name(f"{target.name}.json")


def _is_current(target: Path, parts: gguf_parts.GgufParts) -> bool:
    """The file is there with the size pinned for it, and the marker names these parts (the
    sha256 was checked when it was assembled; hashing 0.5 GB on every start would cost ~1 s)."""
    try:
        marker = json.loads(_marker(target).read_text(encoding="utf-8"))
        size = target.stat().st_size
    except (OSError, ValueError):
        return False
    return size == parts.size and marker.get("source") == parts.fingerprint()
