"""The header of a safetensors blob, read without torch and with explicit limits.

``tensorio.tensors_from_bytes`` reads every blob's header here before safetensors sees the
blob, and commands that only describe a memory (``lpm memory status``: how many numbers a
version holds) read the tensors' names and shapes from it without importing torch.
"""

from __future__ import annotations

import json
import struct

from lpm_local.errors import BadBundle

# A header lists a few tensors and a JSON config: 1 MiB is generous and bounds the JSON parse.
MAX_HEADER_BYTES = 1 << 20


def read_header(blob: bytes, *, where: str) -> tuple[dict[str, dict], dict[str, str]]:
    """(entries, metadata) of a safetensors blob: per tensor name its header entry (dtype,
    shape, data offsets, unchecked), and the str -> str metadata. Refuses, in one line, what
    is not a safetensors header."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise BadBundle(f"expected bytes, got {type(blob).__name__}", where=where)
    blob = bytes(blob)
    if len(blob) < 8:
        raise BadBundle("file is too short to be safetensors", where=where)
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > MAX_HEADER_BYTES:
        raise BadBundle(f"safetensors header of {header_len} bytes is too large", where=where)
    if 8 + header_len > len(blob):
        raise BadBundle("safetensors header is longer than the file (truncated?)", where=where)
    try:
        header = json.loads(blob[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadBundle("not a safetensors file (header is not JSON)", where=where) from None
    if not isinstance(header, dict):
        raise BadBundle("not a safetensors file (header is not an object)", where=where)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise BadBundle("safetensors metadata must map strings to strings", where=where)
    return header, metadata


def tensor_shapes(blob: bytes, *, where: str) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape as the header states it (the data is not read or checked)."""
    entries, _ = read_header(blob, where=where)
    shapes = {}
    for name, entry in entries.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise BadBundle(f"tensor {name!r} has no valid shape in the header", where=where)
        shapes[name] = tuple(shape)
    return shapes
