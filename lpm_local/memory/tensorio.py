"""Safe reading and writing of safetensors blobs: the only tensor format the app accepts.

Every blob's header is parsed with explicit limits (``safetensors_header``) before safetensors
sees the blob (a blob may come from a bundle someone handed over): a header that claims more
bytes than the file holds, a huge header, a pickle renamed ``.safetensors`` or a truncated body
are refused with one line, and nothing in a blob is ever executed.
"""

from __future__ import annotations

import hashlib

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from lpm_local.errors import BadBundle
from lpm_local.memory.safetensors_header import read_header


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise named tensors (contiguous, on CPU) with str->str metadata."""
    clean = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return st_save(clean, metadata=metadata)


def tensors_from_bytes(
    blob: bytes, *, where: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse a safetensors blob, refusing anything malformed; returns (tensors, metadata)."""
    blob = bytes(blob) if isinstance(blob, (bytearray, memoryview)) else blob
    _, metadata = read_header(blob, where=where)
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadBundle(f"corrupt safetensors data ({first})", where=where) from None
    return tensors, dict(metadata)


def check_tensor(
    t: torch.Tensor,
    *,
    name: str,
    shape: tuple[int, ...],
    dtypes: tuple[torch.dtype, ...],
    where: str,
) -> None:
    """Refuse a tensor of the wrong shape or dtype, or one holding NaN/Inf."""
    if tuple(t.shape) != tuple(shape):
        raise BadBundle(
            f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}", where=where
        )
    if t.dtype not in dtypes:
        raise BadBundle(
            f"tensor {name!r} has dtype {t.dtype}, expected one of {dtypes}", where=where
        )
    if not bool(torch.isfinite(t).all()):
        raise BadBundle(f"tensor {name!r} holds NaN or Inf values", where=where)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of names, dtypes, shapes and bytes, independent of file layout and metadata."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
