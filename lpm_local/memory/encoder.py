"""Amortised slot initialiser: a user's history -> initial slots, before gradient refinement.

Prompt tuning starts every user from the same point and has only a few gradient steps to write
the user in. The encoder is what LPM adds: trained across many users, it reads the frozen
backbone's token embeddings of the history and writes slots that already carry the user, and
the refit then refines them with the very same optimiser and steps as prompt tuning.

Each slot n has a learned query per head; it pools the history's token embeddings by attention
(keys from normalised embeddings + a role embedding, values = the embeddings themselves through
a map initialised to the identity), the heads are mixed, and a learned base vector is added.
A learned logit bias over "which user message, counted from the latest" starts with slot n on
the n-th latest user message (+4) and away from assistant turns (-4), so at init slot n is the
mean token embedding of the n-th latest message: a soft prompt in the backbone's own input
space, one message per slot; training then learns which words in a message matter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.tensorio import check_tensor, tensors_from_bytes, tensors_sha256, tensors_to_bytes
from lpm_local.errors import BadBundle

FORMAT = "lpm-encoder/1"
KEY_DIM = 64  # per-head key width: ranking tokens needs little
TURN_BUCKETS = 16  # user messages counted from the latest; older ones share the last bucket
ASSISTANT_BUCKET = TURN_BUCKETS  # every assistant token


class SlotEncoder(nn.Module):
    """History token embeddings [B, L, H] (+ mask, role ids) -> slots [B, N, d_s] fp32."""

    def __init__(self, config: MemoryConfig):
        super().__init__()
        if config.encoder_heads < 1:
            raise ValueError("config.encoder_heads is 0: the encoder is disabled")
        self.config = config
        c, heads = config, config.encoder_heads
        # Small queries: at init the turn bias alone decides what a slot reads.
        self.queries = nn.Parameter(torch.randn(heads, c.n_slots, KEY_DIM) * 0.02)
        bias = torch.zeros(heads, c.n_slots, TURN_BUCKETS + 1)
        for n in range(min(c.n_slots, TURN_BUCKETS)):
            bias[:, n, n] = 4.0
        bias[:, :, ASSISTANT_BUCKET] = -4.0
        self.turn_bias = nn.Parameter(bias)
        self.norm = nn.LayerNorm(c.hidden_size)
        self.role = nn.Embedding(3, c.hidden_size)  # user / assistant / system
        nn.init.zeros_(self.role.weight)
        self.key = nn.Linear(c.hidden_size, heads * KEY_DIM, bias=False)
        self.value = nn.Linear(c.hidden_size, c.slot_dim, bias=False)
        with torch.no_grad():
            eye = torch.eye(c.slot_dim, c.hidden_size)
            self.value.weight.copy_(eye)  # identity (or a truncation) at init
        # Per-head, per-slot mixing weights (softmax over heads): which head feeds which slot.
        self.head_mix = nn.Parameter(torch.zeros(c.n_slots, heads))
        # The base is a shared starting prompt (``init_base_from`` puts vocabulary embeddings
        # there, as prompt tuning's init does); the per-slot gate starts at 0, so an untrained
        # encoder writes exactly a prompt-tuning init and training opens the history path only
        # as far as it helps (raw mean embeddings as soft tokens *hurt* SmolLM2: measured).
        self.base = nn.Parameter(torch.zeros(c.n_slots, c.slot_dim))
        self.gate = nn.Parameter(torch.zeros(c.n_slots, 1))

    def forward(
        self, token_embeds: torch.Tensor, mask: torch.Tensor | None = None,
        roles: torch.Tensor | None = None, turns: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """token_embeds [B, L, H], mask [B, L], roles [B, L] (0 user, 1 assistant, 2 other),
        turns [B, L] (bucket of each token, see ``turn_buckets``).
        Returns (slots [B, N, d_s] fp32, attention [B, heads, N, L])."""
        x = token_embeds.float()
        batch, length, _ = x.shape
        heads = self.config.encoder_heads
        mask = torch.ones(batch, length, device=x.device) if mask is None else mask.float()
        keyin = self.norm(x) + (self.role(roles) if roles is not None else 0.0)
        k = self.key(keyin).view(batch, length, heads, KEY_DIM).transpose(1, 2)  # [B, h, L, dk]
        logits = torch.einsum("hnd,bhld->bhnl", self.queries, k) / math.sqrt(KEY_DIM)
        if turns is not None:
            # turn_bias [h, N, buckets] gathered per token -> [B, h, N, L]
            logits = logits + self.turn_bias[:, :, turns].permute(2, 0, 1, 3)
        logits = logits.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        attention = torch.nan_to_num(logits.softmax(dim=-1))  # an empty history pools to 0
        pooled = attention @ self.value(x).unsqueeze(1)  # [B, h, N, d_s]
        mix = self.head_mix.softmax(dim=-1).t()  # [h, N]
        slots = (pooled * mix[None, :, :, None]).sum(dim=1) * self.gate
        return slots + self.base, attention

    def init_base_from(self, embedding_weight: torch.Tensor, *, seed: int = 0) -> None:
        """Set the base to random vocabulary embeddings (the prompt-tuning init)."""
        from lpm_local.memory.slots import init_slots

        with torch.no_grad():
            self.base.copy_(init_slots(self.config, embedding_weight, seed=seed))

    def sha256(self) -> str:
        return tensors_sha256(self.state_dict())

    def to_bytes(self, extra_metadata: dict[str, str] | None = None) -> bytes:
        metadata = {"format": FORMAT, "memory_config": self.config.to_json()}
        metadata.update(extra_metadata or {})
        return tensors_to_bytes(self.state_dict(), metadata)

    def save(self, path) -> None:
        from pathlib import Path

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)

    @classmethod
    def from_bytes(cls, blob: bytes, *, where: str = "encoder") -> "SlotEncoder":
        tensors, metadata = tensors_from_bytes(blob, where=where)
        if metadata.get("format") != FORMAT:
            raise BadBundle(f"not a slot encoder file (format {metadata.get('format')!r})", where=where)
        try:
            config = MemoryConfig.from_json(metadata.get("memory_config", ""))
            encoder = cls(config)
        except (ValueError, TypeError) as exc:
            raise BadBundle(f"bad memory config: {exc}", where=where) from None
        expected = encoder.state_dict()
        if set(tensors) != set(expected):
            raise BadBundle("encoder tensors differ from its config", where=where)
        for name, ref in expected.items():
            check_tensor(tensors[name], name=name, shape=tuple(ref.shape), dtypes=(torch.float32,), where=where)
        encoder.load_state_dict(tensors)
        return encoder

    @classmethod
    def load(cls, path) -> "SlotEncoder":
        from pathlib import Path

        return cls.from_bytes(Path(path).read_bytes(), where=str(path))


def turn_buckets(roles: list[int]) -> list[int]:
    """Per token: the index of its user message counted from the latest (0 = latest), capped at
    ``TURN_BUCKETS - 1``; assistant/other tokens get ``ASSISTANT_BUCKET``. ``roles`` must give
    one id per token, messages contiguous (as ``windows.history_tokens`` returns them)."""
    out = [ASSISTANT_BUCKET] * len(roles)
    turn, prev = -1, None
    for i in range(len(roles) - 1, -1, -1):  # walk back from the latest token
        if roles[i] == 0 and prev != 0:
            turn += 1
        if roles[i] == 0:
            out[i] = min(turn, TURN_BUCKETS - 1)
        prev = roles[i]
    return out


def encode_history(encoder: SlotEncoder, embed, ids: list[int], roles: list[int]) -> torch.Tensor:
    """One user's initial slots [N, d_s] from history token ids (``embed``: ids -> embeddings).
    Two user messages in a row without an assistant turn between them count as one message."""
    device = next(encoder.parameters()).device
    if not ids:
        ids, roles = [0], [2]
        mask = torch.zeros(1, 1, device=device)
    else:
        mask = torch.ones(1, len(ids), device=device)
    id_t = torch.tensor([ids], device=device)
    with torch.no_grad():
        x = embed(id_t)
    turns = torch.tensor([turn_buckets(roles)], device=device)
    slots, _ = encoder(x, mask, torch.tensor([roles], device=device), turns)
    return slots[0]
