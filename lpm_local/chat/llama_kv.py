"""The prompt's KV cache computed by PyTorch and handed to llama.cpp, which then decodes from it.

Measured on 2 cores with one thread each, llama.cpp's prefill of the quantized GGUF is slower
than PyTorch's fp32 one (SmolLM2 Q4_1: 51 positions 0.40-0.45 s against 0.30-0.40 s; 558
positions 6.4-7.9 s against 3.0-4.2 s): its batched int8 dot products do not reach the fp32
GEMM's throughput, while one token at a time (decode) the 4-bit weights win by reading 6x fewer
bytes. So a reply takes the best of both: PyTorch runs the soft prompt and the prompt in one
forward pass (the reference path's own arithmetic, so the first token is the reference's), its
per-layer keys and values are written into llama.cpp's KV cache, and llama.cpp decodes the rest.

The bytes are llama.cpp's per-sequence state (``llama_state_seq_set_data``): a header, one
(position, sequence) record per cell, then per layer the K rows and the V rows (or V transposed,
without flash attention) in the cache's type. That layout is llama.cpp's, not a published
format, so it is never assumed: ``probe_layout`` reads the state llama.cpp itself writes for one
decoded token and learns the types, the transposition and the row sizes from it, and refuses
(None: the caller keeps llama.cpp's own prefill) when anything differs from what is understood.

Keys are stored after RoPE in both libraries. For a model whose llama.cpp RoPE is the
interleaved kind (``LLAMA_ROPE_TYPE_NORM``: Llama, SmolLM2), the GGUF converter permuted each
head's K rows from transformers' two halves into interleaved pairs, so the keys are permuted
the same way here; NeoX-style RoPE (Qwen2) keeps transformers' order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from lpm_local.backbones.loader import Backbone

STATE_MAGIC = 0xAF143CD8  # llama.cpp's io_magic, first in every sequence state
GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1
DTYPES = {GGML_TYPE_F32: np.float32, GGML_TYPE_F16: np.float16}


@dataclass(frozen=True)
class CacheLayout:
    """What one sequence's state looks like in this llama.cpp context."""

    n_layer: int
    k_type: int  # GGML type id (F16 or F32)
    v_type: int
    k_row: int  # bytes per cell per layer: n_kv_heads * head_dim * element size
    v_row: int
    v_trans: bool  # V stored as [n_embd_v, cells] (no flash attention)
    permute_keys: bool  # interleaved RoPE: keys from transformers' halves into pairs


@dataclass
class TorchPrefill:
    """The reference path's prefill: next-token logits after the last position, and per layer
    keys and values [n_kv_heads, T, head_dim] (post-RoPE, transformers' head order)."""

    logits: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    positions: int


def probe_layout(state: bytes, *, n_layer: int, permute_keys: bool) -> CacheLayout | None:
    """Learn the layout from the state llama.cpp wrote for exactly one cell of sequence 0;
    None when it is not the layout this module writes."""
    try:
        off = 0

        def read(fmt: str) -> tuple:
            nonlocal off
            values = struct.unpack_from(fmt, state, off)
            off += struct.calcsize(fmt)
            return values

        magic, seq, streams, cells = read("<IiII")
        if (magic, seq, streams, cells) != (STATE_MAGIC, 0, 1, 1):
            return None
        _, n_seq = read("<iI")
        if n_seq != 1 or read("<i")[0] != 0:
            return None
        v_trans, layers = read("<II")
        if layers != n_layer or v_trans not in (0, 1):
            return None
        k_types, v_types, k_rows, v_rows = set(), set(), set(), set()
        for _ in range(layers):
            k_type, k_row = read("<iQ")
            k_types.add(k_type)
            k_rows.add(k_row)
            off += k_row
        for _ in range(layers):
            if v_trans:
                v_type, size, n_embd = read("<iII")
                v_row = size * n_embd
                off += v_row
            else:
                v_type, v_row = read("<iQ")
                off += v_row
            v_types.add(v_type)
            v_rows.add(v_row)
        if off != len(state) or max(map(len, (k_types, v_types, k_rows, v_rows))) != 1:
            return None  # per-layer shapes or types differ, or bytes left over: not understood
        k_type, v_type = k_types.pop(), v_types.pop()
        if k_type not in DTYPES or v_type not in DTYPES:
            return None
        return CacheLayout(
            n_layer=layers,
            k_type=k_type,
            v_type=v_type,
            k_row=k_rows.pop(),
            v_row=v_rows.pop(),
            v_trans=bool(v_trans),
            permute_keys=permute_keys,
        )
    except struct.error:
        return None


def state_bytes(layout: CacheLayout, prefill: TorchPrefill) -> bytes:
    """llama.cpp's state of sequence 0 holding ``prefill``'s keys and values at positions
    0..T-1. Raises ValueError when the shapes do not fit ``layout``."""
    if len(prefill.layers) != layout.n_layer:
        raise ValueError(f"{len(prefill.layers)} layers of KV for a {layout.n_layer}-layer model")
    cells = prefill.positions
    k_dtype, v_dtype = DTYPES[layout.k_type], DTYPES[layout.v_type]
    parts = [struct.pack("<IiII", STATE_MAGIC, 0, 1, cells)]
    meta = np.zeros(cells, dtype=[("pos", "<i4"), ("n_seq", "<u4"), ("seq", "<i4")])
    meta["pos"] = np.arange(cells)
    meta["n_seq"] = 1
    parts.append(meta.tobytes())
    parts.append(struct.pack("<II", int(layout.v_trans), layout.n_layer))
    for keys, _ in prefill.layers:
        rows = _cell_rows(_llama_key_order(keys) if layout.permute_keys else keys, k_dtype)
        _check_row(rows, layout.k_row, "key")
        parts += [struct.pack("<iQ", layout.k_type, layout.k_row), rows.tobytes()]
    for _, values in prefill.layers:
        rows = _cell_rows(values, v_dtype)
        if layout.v_trans:
            _check_row(rows, layout.v_row, "value")
            size = np.dtype(v_dtype).itemsize
            parts.append(struct.pack("<iII", layout.v_type, size, rows.shape[1]))
            parts.append(np.ascontiguousarray(rows.T).tobytes())
        else:
            _check_row(rows, layout.v_row, "value")
            parts += [struct.pack("<iQ", layout.v_type, layout.v_row), rows.tobytes()]
    return b"".join(parts)


def _cell_rows(heads: np.ndarray, dtype) -> np.ndarray:
    """[n_kv_heads, T, head_dim] -> [T, n_kv_heads * head_dim]: one row per cell."""
    n_heads, positions, head_dim = heads.shape
    return np.ascontiguousarray(
        heads.transpose(1, 0, 2).reshape(positions, n_heads * head_dim), dtype
    )


def _llama_key_order(keys: np.ndarray) -> np.ndarray:
    """Within each head, transformers' (first half, second half) -> llama.cpp's pairs: element
    2i + a of llama.cpp's key is element a * head_dim / 2 + i of transformers'."""
    n_heads, positions, head_dim = keys.shape
    halves = keys.reshape(n_heads, positions, 2, head_dim // 2)
    return halves.swapaxes(-1, -2).reshape(n_heads, positions, head_dim)


def _check_row(rows: np.ndarray, expected: int, what: str) -> None:
    got = rows.shape[1] * rows.dtype.itemsize
    if got != expected:
        raise ValueError(f"{what} rows of {got} bytes, llama.cpp's cache has {expected}")


def torch_prefill(
    backbone: Backbone, ids: torch.Tensor, prefix: torch.Tensor | None
) -> TorchPrefill:
    """One forward pass of the reference path (soft prefix then ids [1, T]) with its cache:
    logits after the last position and every layer's keys and values."""
    import torch

    with torch.no_grad():
        embeds = backbone.embed(ids.to(backbone.device))  # [1, T, H]
        if prefix is not None:
            soft = prefix if prefix.dim() == 3 else prefix.unsqueeze(0)
            embeds = torch.cat([soft.to(device=embeds.device, dtype=embeds.dtype), embeds], dim=1)
        # No attention mask: one unpadded sequence (the engine's mask is all ones here).
        out = backbone.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    cache = out.cache
    layers = [
        (layer.keys[0].float().numpy(), layer.values[0].float().numpy()) for layer in cache.layers
    ]
    return TorchPrefill(
        logits=out.logits[0, -1].float().numpy(), layers=layers, positions=int(embeds.shape[1])
    )
