"""Per-user slots: their initialisation and their one storage format (safetensors bytes).

A profile's memory is one ``[n_slots, slot_dim]`` tensor. It is stored per version as a
safetensors blob whose metadata carries the ``MemoryConfig``; reading one back checks shape,
dtype and finiteness against that config, so a hostile or damaged blob is refused and a good
one comes back bit for bit.
"""

from __future__ import annotations

import torch

from lpm_local.errors import BadBundle
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.tensorio import check_tensor, tensors_from_bytes, tensors_to_bytes

FORMAT = "lpm-slots/1"
SLOTS_KEY = "slots"
# Storage dtypes a version may hold: fp32 (CPU default) and the half types of CUDA backbones.
ALLOWED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def init_slots(
    config: MemoryConfig, embedding_weight: torch.Tensor | None = None, *, seed: int = 0
) -> torch.Tensor:
    """A fresh memory ``[n_slots, slot_dim]`` fp32.

    With the backbone's embedding matrix and ``slot_dim == hidden_size``, each slot is the
    embedding of a random vocabulary token (the usual prompt-tuning init: it starts where the
    backbone expects inputs). Otherwise: Gaussian at the scale of typical embeddings.
    """
    gen = torch.Generator().manual_seed(seed)
    if embedding_weight is not None and embedding_weight.shape[1] == config.slot_dim:
        weight = embedding_weight.detach().float().cpu()
        rows = torch.randint(0, weight.shape[0], (config.n_slots,), generator=gen)
        slots = weight[rows].clone()
        scale = weight.pow(2).mean().sqrt()
    else:
        scale = torch.tensor(0.1)  # ~ the RMS of small-LM token embeddings (SmolLM2: 0.136)
        slots = torch.zeros(config.n_slots, config.slot_dim)
    if (
        config.init_noise
        or embedding_weight is None
        or embedding_weight.shape[1] != config.slot_dim
    ):
        noise_scale = config.init_noise if config.init_noise else 1.0
        slots = slots + torch.randn(slots.shape, generator=gen) * scale * noise_scale
    return slots


def slots_to_bytes(
    slots: torch.Tensor, config: MemoryConfig, extra_metadata: dict[str, str] | None = None
) -> bytes:
    """Serialise a memory version; refuses to write what ``slots_from_bytes`` would refuse."""
    check_tensor(
        slots.detach(),
        name=SLOTS_KEY,
        shape=(config.n_slots, config.slot_dim),
        dtypes=ALLOWED_DTYPES,
        where="slots to save",
    )
    metadata = {"format": FORMAT, "memory_config": config.to_json()}
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"metadata key {key!r} is reserved")
        metadata[key] = str(value)
    return tensors_to_bytes({SLOTS_KEY: slots}, metadata)


def slots_from_bytes(blob: bytes, *, where: str = "memory") -> tuple[torch.Tensor, MemoryConfig]:
    """Parse a memory version: (slots, config), or ``BadBundle`` naming what is wrong."""
    tensors, metadata = tensors_from_bytes(blob, where=where)
    if metadata.get("format") != FORMAT:
        raise BadBundle(f"not a memory slots blob (format {metadata.get('format')!r})", where=where)
    try:
        config = MemoryConfig.from_json(metadata.get("memory_config", ""))
    except (ValueError, TypeError) as exc:
        raise BadBundle(f"bad memory config: {exc}", where=where) from None
    if set(tensors) != {SLOTS_KEY}:
        raise BadBundle(f"expected one tensor {SLOTS_KEY!r}, found {sorted(tensors)}", where=where)
    slots = tensors[SLOTS_KEY]
    check_tensor(
        slots,
        name=SLOTS_KEY,
        shape=(config.n_slots, config.slot_dim),
        dtypes=ALLOWED_DTYPES,
        where=where,
    )
    return slots, config


def slots_metadata(blob: bytes, *, where: str = "memory") -> dict[str, str]:
    """The metadata of a valid blob (e.g. the projector sha256 it was fitted against)."""
    slots_from_bytes(blob, where=where)  # refuse what would be refused on load
    _, metadata = tensors_from_bytes(blob, where=where)
    return metadata
