"""Per-user slots: their initialisation and their one storage format (safetensors bytes).

A profile's memory is one ``[n_slots, slot_dim]`` tensor. It is stored per version as a
safetensors blob whose metadata carries the ``MemoryConfig``; reading one back checks shape,
dtype and finiteness against that config, so a hostile or damaged blob is refused and a good
one comes back bit for bit.

A routed bank's blob also holds what its fits learned, as a low-rank change ``A @ B`` (A
``[n_slots, r]``, B ``[r, slot_dim]``, ``fitting.fit_slots(rank=r)``): the slots are the bank
the history wrote (keys and words) plus that change, and the next refit goes on fitting the
same A and B, so what a profile has learned stays (n_slots + slot_dim) * r numbers.
"""

from __future__ import annotations

import torch

from lpm_local.errors import BadBundle
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.tensorio import check_tensor, tensors_from_bytes, tensors_to_bytes

FORMAT = "lpm-slots/1"
SLOTS_KEY = "slots"
CHANGE_KEYS = ("change_a", "change_b")
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
    slots: torch.Tensor,
    config: MemoryConfig,
    extra_metadata: dict[str, str] | None = None,
    *,
    change: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> bytes:
    """Serialise a memory version (with the fit's low-rank ``change`` (A, B) of the slots,
    when there is one); refuses to write what ``slots_from_bytes`` would refuse."""
    tensors = {SLOTS_KEY: slots.detach()}
    if change is not None:
        tensors.update(zip(CHANGE_KEYS, (t.detach() for t in change)))
    _check(tensors, config, where="slots to save")
    metadata = {"format": FORMAT, "memory_config": config.to_json()}
    for key, value in (extra_metadata or {}).items():
        if key in metadata:
            raise ValueError(f"metadata key {key!r} is reserved")
        metadata[key] = str(value)
    return tensors_to_bytes(tensors, metadata)


def slots_from_bytes(blob: bytes, *, where: str = "memory") -> tuple[torch.Tensor, MemoryConfig]:
    """Parse a memory version: (slots, config), or ``BadBundle`` naming what is wrong."""
    slots, config, _ = memory_from_bytes(blob, where=where)
    return slots, config


def memory_from_bytes(
    blob: bytes, *, where: str = "memory"
) -> tuple[torch.Tensor, MemoryConfig, tuple[torch.Tensor, torch.Tensor] | None]:
    """Everything a version blob holds, from one parse: (slots, config, change or None)."""
    tensors, config = _parse(blob, where=where)
    change = None
    if CHANGE_KEYS[0] in tensors:
        change = (tensors[CHANGE_KEYS[0]], tensors[CHANGE_KEYS[1]])
    return tensors[SLOTS_KEY], config, change


def _parse(blob: bytes, *, where: str) -> tuple[dict[str, torch.Tensor], MemoryConfig]:
    """A version blob's tensors and config, checked (one parse of the blob)."""
    tensors, metadata = tensors_from_bytes(blob, where=where)
    if metadata.get("format") != FORMAT:
        raise BadBundle(f"not a memory slots blob (format {metadata.get('format')!r})", where=where)
    try:
        config = MemoryConfig.from_json(metadata.get("memory_config", ""))
    except (ValueError, TypeError) as exc:
        raise BadBundle(f"bad memory config: {exc}", where=where) from None
    _check(tensors, config, where=where)
    return tensors, config


def _check(tensors: dict[str, torch.Tensor], config: MemoryConfig, *, where: str) -> None:
    """The slots, and the change when present, in the shapes, dtypes and values they may have."""
    if set(tensors) not in ({SLOTS_KEY}, {SLOTS_KEY, *CHANGE_KEYS}):
        raise BadBundle(
            f"expected tensor {SLOTS_KEY!r} (and {' and '.join(map(repr, CHANGE_KEYS))}), "
            f"found {sorted(tensors)}",
            where=where,
        )
    check_tensor(
        tensors[SLOTS_KEY],
        name=SLOTS_KEY,
        shape=(config.n_slots, config.slot_dim),
        dtypes=ALLOWED_DTYPES,
        where=where,
    )
    if CHANGE_KEYS[0] not in tensors:
        return
    a, b = (tensors[k] for k in CHANGE_KEYS)
    rank = a.shape[-1] if a.dim() == 2 else -1
    if not 1 <= rank <= min(config.n_slots, config.slot_dim):
        raise BadBundle(f"tensor {CHANGE_KEYS[0]!r} has shape {tuple(a.shape)}", where=where)
    for name, t, shape in zip(
        CHANGE_KEYS, (a, b), ((config.n_slots, rank), (rank, config.slot_dim))
    ):
        check_tensor(t, name=name, shape=shape, dtypes=ALLOWED_DTYPES, where=where)


def slots_metadata(blob: bytes, *, where: str = "memory") -> dict[str, str]:
    """The metadata of a valid blob (e.g. the projector sha256 it was fitted against)."""
    slots_from_bytes(blob, where=where)  # refuse what would be refused on load
    _, metadata = tensors_from_bytes(blob, where=where)
    return metadata
