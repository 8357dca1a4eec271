"""The header of a safetensors blob, read without torch and with explicit limits.

``tensorio.tensors_from_bytes`` reads every blob's header here before safetensors sees the
blob, and commands that only describe a memory (``lpm memory status``: how many numbers a
version holds, how many of its bank's groups are filed) read the tensors' names and shapes, and
which rows are all zero, without importing torch.
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
    return shapes_in(read_header(blob, where=where)[0], where=where)


def shapes_in(entries: dict[str, dict], *, where: str) -> dict[str, tuple[int, ...]]:
    """``tensor_shapes`` of a header already read (``read_header``'s entries)."""
    shapes = {}
    for name, entry in entries.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise BadBundle(f"tensor {name!r} has no valid shape in the header", where=where)
        shapes[name] = tuple(shape)
    return shapes


def zero_rows(blob: bytes, name: str, rows, *, where: str) -> list[bool]:
    """For each of ``rows`` of the 2-D tensor ``name``, whether all its bytes are zero (a bank's
    empty group has an all-zero key; whatever the dtype, +0.0 is all zero bytes)."""
    entries, _ = read_header(blob, where=where)
    shape = shapes_in(entries, where=where).get(name)
    entry = entries.get(name)
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if shape is None or len(shape) != 2:
        raise BadBundle(f"no 2-D tensor {name!r} in the blob", where=where)
    (header_len,) = struct.unpack("<Q", blob[:8])
    start = 8 + header_len
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= len(blob) - start
        or shape[0] == 0
        or (offsets[1] - offsets[0]) % shape[0]
    ):
        raise BadBundle(f"tensor {name!r} has bad data offsets in the header", where=where)
    row_bytes = (offsets[1] - offsets[0]) // shape[0]
    data = memoryview(blob)[start + offsets[0] : start + offsets[1]]
    out = []
    for row in rows:
        if not 0 <= row < shape[0]:
            raise BadBundle(f"row {row} is outside tensor {name!r} ({shape[0]} rows)", where=where)
        out.append(not bytes(data[row * row_bytes : (row + 1) * row_bytes]).strip(b"\0"))
    return out
