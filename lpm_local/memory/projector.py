"""The shared cross-attention projector: per-user slots -> soft-prompt vectors.

``soft[m] = slots[m] W_id + out( attention(query_m(input), key(slots)) . value(slots) )``

- The identity path (``W_id`` initialised to the identity, ``out`` initialised to zero) makes a
  fresh projector exactly prompt tuning: soft token m is slot m. Training can only add to that,
  and that matters: in the measurements a projector that started below prompt tuning stayed
  there.
- The attention path lets every soft token read any slot, with queries conditioned on the
  current user message (pooled token embeddings), and returns the attention ``[B, heads, M, N]``
  for inspection ("which slots did this reply read").
- No output normalisation and no gate: both starved the slots in the first prototype.

The projector computes in fp32 whatever the backbone dtype; the caller casts once at the concat.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lpm_local.errors import BadBundle
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.tensorio import (
    check_tensor,
    tensors_from_bytes,
    tensors_sha256,
    tensors_to_bytes,
)

FORMAT = "lpm-projector/1"


class Projector(nn.Module):
    """Cross-attention from M input-conditioned queries to N slots, writing M soft tokens."""

    kind = "identity"  # what a report calls it when it is not shipped (trained) weights

    def __init__(self, config: MemoryConfig):
        super().__init__()
        self.config = config
        c = config
        inner = c.heads * c.head_dim
        if c.hidden_size % c.heads:
            raise ValueError(f"hidden_size {c.hidden_size} is not divisible by heads {c.heads}")
        self.base_queries = nn.Parameter(torch.randn(c.n_soft_tokens, inner) * 0.02)
        self.query_norm = nn.LayerNorm(c.hidden_size)
        self.query_in = nn.Linear(c.hidden_size, inner)
        self.key_norm = nn.LayerNorm(c.slot_dim)
        self.key = nn.Linear(c.slot_dim, inner, bias=False)
        # A learned [heads, M, N] logit bias: lets soft token m prefer slot n regardless of input.
        self.slot_bias = nn.Parameter(torch.zeros(c.heads, c.n_soft_tokens, c.n_slots))
        self.value = nn.Linear(c.slot_dim, c.hidden_size, bias=False)
        self.out = nn.Linear(c.hidden_size, c.hidden_size)
        nn.init.zeros_(self.out.weight)  # zero-init: the mix starts as a no-op (Flamingo-style)
        nn.init.zeros_(self.out.bias)
        if c.identity_path:
            self.identity = nn.Linear(c.slot_dim, c.hidden_size)
            with torch.no_grad():
                self.identity.weight.copy_(torch.eye(c.hidden_size))
                self.identity.bias.zero_()
        else:
            self.identity = None

    def forward(
        self,
        slots: torch.Tensor,
        query_embeds: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """slots [N, d_s] or [B, N, d_s]; query_embeds [B, T, H] (token embeddings of the current
        user message) with query_mask [B, T] (1 = token). Returns (soft [B, M, H] fp32,
        attention [B, heads, M, N] fp32). Without a query the pooled input is zero."""
        c = self.config
        slots = slots.float()
        if slots.dim() == 2:
            slots = slots.unsqueeze(0)  # [1, N, d_s]
        batch = query_embeds.shape[0] if query_embeds is not None else slots.shape[0]
        if slots.shape[0] == 1 and batch > 1:
            slots = slots.expand(batch, -1, -1)  # one user's slots for a batch of inputs
        if tuple(slots.shape[1:]) != (c.n_slots, c.slot_dim) or slots.shape[0] != batch:
            raise ValueError(f"slots shape {tuple(slots.shape)} does not fit batch {batch} and {c}")
        pooled = self._pool(query_embeds, query_mask)  # [B, H]
        if pooled is None:
            pooled = slots.new_zeros(batch, c.hidden_size)
        q = self.base_queries.unsqueeze(0) + self.query_in(self.query_norm(pooled)).unsqueeze(1)
        q = q.view(batch, c.n_soft_tokens, c.heads, c.head_dim).transpose(1, 2)  # [B, h, M, dh]
        k = self.key(self.key_norm(slots))
        k = k.view(batch, c.n_slots, c.heads, c.head_dim).transpose(1, 2)  # [B, h, N, dh]
        logits = q @ k.transpose(-1, -2) / math.sqrt(c.head_dim) + self.slot_bias  # [B, h, M, N]
        attention = logits.softmax(dim=-1)
        v = self.value(slots).view(batch, c.n_slots, c.heads, -1).transpose(1, 2)  # [B, h, N, H/h]
        mixed = (attention @ v).transpose(1, 2).reshape(batch, c.n_soft_tokens, c.hidden_size)
        soft = self.out(mixed)  # [B, M, H]
        if self.identity is not None:
            soft = soft + self.identity(slots)
        return soft, attention

    def writes(self, slots: torch.Tensor) -> torch.Tensor:
        """What each slot writes through the projector [N, H] (the inspector labels it)."""
        slots = slots.float()
        written = self.out(self.value(slots))
        return written + self.identity(slots) if self.identity is not None else written

    def key_rows(self) -> list[int]:
        """Rows that route rather than write: none in a cross-attention projector."""
        return []

    @staticmethod
    def _pool(
        query_embeds: torch.Tensor | None, query_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Masked mean of the message's token embeddings: [B, T, H] -> [B, H] (0 if no tokens)."""
        if query_embeds is None:
            return None
        x = query_embeds.float()
        mask = (
            torch.ones(x.shape[:2], device=x.device) if query_mask is None else query_mask.float()
        )
        total = (x * mask.unsqueeze(-1)).sum(dim=1)
        return total / mask.sum(dim=1, keepdim=True).clamp(min=1.0)

    # -- persistence -------------------------------------------------------------------------

    def sha256(self) -> str:
        """Digest of the weights (names, dtypes, shapes, bytes): pins slots to their projector."""
        return tensors_sha256(self.state_dict())

    def to_bytes(self, extra_metadata: dict[str, str] | None = None) -> bytes:
        metadata = {"format": FORMAT, "memory_config": self.config.to_json()}
        metadata.update(extra_metadata or {})
        return tensors_to_bytes(self.state_dict(), metadata)

    def save(self, path: str | Path, extra_metadata: dict[str, str] | None = None) -> None:
        """Write the weights as safetensors with the config in the metadata (atomic rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes(extra_metadata))
        tmp.replace(path)

    @classmethod
    def from_bytes(cls, blob: bytes, *, where: str = "projector") -> "Projector":
        """Rebuild a projector, refusing missing/extra tensors, wrong shapes/dtypes, NaN/Inf."""
        tensors, metadata = tensors_from_bytes(blob, where=where)
        if metadata.get("format") != FORMAT:
            raise BadBundle(
                f"not a projector file (format {metadata.get('format')!r})", where=where
            )
        try:
            config = MemoryConfig.from_json(metadata.get("memory_config", ""))
        except (ValueError, TypeError) as exc:
            raise BadBundle(f"bad memory config: {exc}", where=where) from None
        projector = cls(config)
        expected = projector.state_dict()
        if set(tensors) != set(expected):
            missing, extra = (
                sorted(set(expected) - set(tensors)),
                sorted(set(tensors) - set(expected)),
            )
            raise BadBundle(
                f"projector tensors differ (missing {missing}, extra {extra})", where=where
            )
        for name, ref in expected.items():
            check_tensor(
                tensors[name],
                name=name,
                shape=tuple(ref.shape),
                dtypes=(torch.float32,),
                where=where,
            )
        projector.load_state_dict(tensors)
        return projector

    @classmethod
    def load(cls, path: str | Path) -> "Projector":
        path = Path(path)
        return cls.from_bytes(path.read_bytes(), where=str(path))


def prompt_tuning_projector(config: MemoryConfig) -> Projector:
    """A fresh projector: by construction soft == slots, i.e. prompt tuning (for baselines)."""
    if not config.identity_path:
        raise ValueError("prompt tuning equivalence needs identity_path=True")
    return Projector(config)


__all__ = ["FORMAT", "Projector", "prompt_tuning_projector"]
