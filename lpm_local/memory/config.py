"""Shape and initialisation of Latent Personal Memory: slots and projector.

One ``MemoryConfig`` describes a memory for one backbone. It travels with every saved tensor
(as safetensors metadata), so a blob can be checked against the projector that will read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

# Keys older files may carry, ignored on reading: the learned slot encoder, replaced by the
# salient-token initialisation (its gate never opened: PROJECTOR_CARD.md). Slots stored with
# them stay readable.
RETIRED_KEYS = frozenset({"encoder_heads", "encoder_max_tokens"})


def heads_for(hidden_size: int) -> int:
    """Attention heads for a memory of this width: the most of 4, 2, 1 that divide it."""
    return next(h for h in (4, 2, 1) if hidden_size % h == 0)


@dataclass(frozen=True)
class MemoryConfig:
    """Dimensions of the per-user slots and of the shared projector.

    The defaults are those of the embedded SmolLM2-135M (hidden 576).
    """

    # The backbone's hidden size: soft tokens are written in it. 576 = SmolLM2-135M.
    hidden_size: int = 576
    # 8 slots of the hidden size: per-user state 8 x 576 = 4,608 numbers, exactly the size of
    # an 8-token prompt tuning baseline, so a comparison with it is at equal per-user state.
    n_slots: int = 8
    # Slots live in the hidden size so that the identity path (soft token m = slot m at init)
    # makes the projector a strict generalisation of prompt tuning.
    slot_dim: int = 576
    # 8 soft tokens: as many as slots (needed for the identity path); a short prefix keeps the
    # per-turn KV cache small.
    n_soft_tokens: int = 8
    # Attention heads that read the slots; 4 heads of 144 dims divide 576 and give the
    # inspector four views of which slot fed which soft token.
    heads: int = 4
    # Width of the attention keys/queries per head: small, because it only has to rank 8 slots.
    head_dim: int = 32
    # Soft token m starts as slot m (W_v = I); the cross-attention mix is added on top through a
    # zero-initialised output map, so at init the projector *is* prompt tuning (a tested fact).
    identity_path: bool = True
    # History tokens the salient-token initialisation reads at most (the most recent ones): a
    # forward pass of the backbone over them (in 512-token chunks), so this bounds its cost;
    # 16K covers the histories of the evaluation, beyond SmolLM2's 8K window.
    salient_max_tokens: int = 16384
    # Std of the random part of vocabulary-sampled slot init, relative to the embedding RMS:
    # small, so a fresh memory starts near real token embeddings.
    init_noise: float = 0.0
    # A routed bank (``routing.py``): 0 = a flat memory, every slot read by every turn. G > 0:
    # the slots are G groups of (1 key row + n_soft_tokens / route_pick token rows), and each
    # turn reads the ``route_pick`` groups whose keys are nearest to its message.
    route_groups: int = 0
    route_pick: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "n_slots", "slot_dim", "n_soft_tokens", "heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MemoryConfig.{name} must be a positive int, got {value!r}")
        for name in ("route_groups", "route_pick"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"MemoryConfig.{name} must be an int >= 0, got {value!r}")
        if self.route_groups or self.route_pick:
            self._check_routing()
        elif self.identity_path and self.n_slots != self.n_soft_tokens:
            raise ValueError(
                f"identity_path needs n_slots == n_soft_tokens, got {self.n_slots} != "
                f"{self.n_soft_tokens}"
            )
        if self.identity_path and self.slot_dim != self.hidden_size:
            raise ValueError(
                f"identity_path needs slot_dim == hidden_size, got {self.slot_dim} != "
                f"{self.hidden_size}"
            )
        if self.salient_max_tokens < 2:
            raise ValueError(f"salient_max_tokens must be >= 2, got {self.salient_max_tokens}")
        if not 0.0 <= self.init_noise < 10.0:
            raise ValueError(f"MemoryConfig.init_noise must be in [0, 10), got {self.init_noise}")

    def _check_routing(self) -> None:
        if not 0 < self.route_pick <= self.route_groups:
            raise ValueError(
                f"routing needs 0 < route_pick <= route_groups, got {self.route_pick}, "
                f"{self.route_groups}"
            )
        if self.identity_path or self.n_soft_tokens % self.route_pick:
            raise ValueError(
                "a routed bank needs identity_path=False and n_soft_tokens divisible by route_pick"
            )
        if self.slot_dim != self.hidden_size:
            raise ValueError("a routed bank's rows are soft tokens: slot_dim must be hidden_size")
        if self.n_slots != self.route_groups * (self.group_tokens + 1):
            raise ValueError(
                f"a bank of {self.route_groups} groups of {self.group_tokens} tokens has "
                f"{self.route_groups * (self.group_tokens + 1)} rows, not n_slots={self.n_slots}"
            )

    @property
    def routed(self) -> bool:
        return self.route_groups > 0

    @property
    def group_tokens(self) -> int:
        """Token rows per group of a routed bank (0 for a flat memory)."""
        return self.n_soft_tokens // self.route_pick if self.routed else 0

    @property
    def per_user_numbers(self) -> int:
        """Numbers of per-user state a version stores. A flat memory's refit trains them all; a
        routed bank's learns a low-rank change of them (``RefitSettings.change_rank``)."""
        return self.n_slots * self.slot_dim

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MemoryConfig":
        """Parse a config written by ``to_json``; unknown keys or bad values raise ValueError."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"memory config is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("memory config must be a JSON object")
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k not in RETIRED_KEYS}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"memory config has unknown keys: {sorted(unknown)}")
        return cls(**raw)
