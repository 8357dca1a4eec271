"""The frozen half of the memory for one backbone (the projector), where a profile's slots start,
and the one way a stored version becomes slots.

The projector ships per backbone (``lpm_local/backbones/<name>/projector.safetensors``). A backbone
without shipped weights (a local model directory, the tiny test Qwen3, a backbone not trained yet)
gets the identity-initialised projector: soft token m is slot m, i.e. plain prompt tuning, which
works without any training. Its random parts are drawn from a fixed seed, so its sha256 (which pins
every version to the projector it was fitted against) is the same in every process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from lpm_local.chat.encoding import DEFAULT_SYSTEM_PROMPT, ChatFormat
from lpm_local.errors import BadBundle, CorruptDatabase, ModelNotAvailable
from lpm_local.memory.config import MemoryConfig, heads_for
from lpm_local.memory.projector import Projector, prompt_tuning_projector
from lpm_local.memory.routing import (
    RoutedProjector,
    bank_config,
    bank_slots,
    extend_bank,
    filed_statements,
    route_features,
)
from lpm_local.memory.salient import salient_slots
from lpm_local.memory.slots import memory_from_bytes
from lpm_local.storage.records import MemoryVersion
from lpm_local.storage.store import Store

# Seed of the identity projector's random (but, at init, unused) query/key weights.
IDENTITY_SEED = 0
# A pasted document as the user message: the pooled query reads at most its last tokens.
MAX_QUERY_TOKENS = 2048


# Soft tokens a turn reads from a memory without a trained projector. Measured on a six-fact
# persona with Qwen2.5-0.5B, recall examples, lr 0.0038: 8 soft tokens answered 1 of 6 after 20
# and 40 steps (the facts ran together: "You're Maren, she plays the fish."), 32 answered 3 of 6
# after 20. Still 32 tokens of KV per turn, 375x less than 12K tokens of history in context.
PROMPT_TUNING_TOKENS = 32
# Groups of the routed bank such a backbone's memory is (``routing.py``), and groups per turn:
# 32 groups of 8 tokens, 4 read per turn (the 32 soft tokens above). Measured on two 16-fact
# personas with Qwen2.5-0.5B (the app's import, refit and ask): a flat memory of 32 soft tokens
# answered 5 and 8 of 16 facts, the bank 10 and 8 (9 and 10 routed at layer 6), none 0 (README).
BANK_GROUPS = 32
BANK_PICK = 4


def prompt_tuning_config(hidden_size: int, tokens: int = PROMPT_TUNING_TOKENS) -> MemoryConfig:
    """A flat memory of ``tokens`` full-width slots read by the identity projector: prompt
    tuning with that many tokens (heads that divide the hidden size)."""
    return MemoryConfig(
        hidden_size=hidden_size,
        slot_dim=hidden_size,
        heads=heads_for(hidden_size),
        n_slots=tokens,
        n_soft_tokens=tokens,
    )


def default_config(hidden_size: int) -> MemoryConfig:
    """The memory shape for a backbone without shipped weights: a routed bank of
    ``BANK_GROUPS`` groups, ``BANK_PICK`` of them (``PROMPT_TUNING_TOKENS`` soft tokens) per
    turn."""
    return bank_config(
        hidden_size, soft_tokens=PROMPT_TUNING_TOKENS, groups=BANK_GROUPS, pick=BANK_PICK
    )


@dataclass(eq=False)
class FrozenMemory:
    """Backbone + projector for one backbone; shared by every profile using it."""

    backbone: object  # lpm_local.backbones.loader.Backbone
    projector: Projector | RoutedProjector
    config: MemoryConfig
    projector_sha256: str
    shipped: bool  # trained weights from lpm_local/backbones/<name>/, else the identity projector
    chat: ChatFormat  # the chat's own encoding: refit windows are built in it

    @functools.cached_property
    def embedding_rms(self) -> float:
        """RMS of the backbone's input embeddings: the scale slots live at (refit's lr)."""
        weight = self.backbone.model.get_input_embeddings().weight
        return float(weight.detach().float().pow(2).mean().sqrt())

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def soft(self, slots: torch.Tensor, user_text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(soft [M, H] fp32, attention [heads, M, N]) for one message; never takes a gradient
        (grad mode is per thread: this holds whatever a refit thread is doing)."""
        ids = self.chat.text_ids(user_text)[-MAX_QUERY_TOKENS:]
        if self.config.routed:
            # Read afresh every turn (not from the fit's remembered readings): a chat message is
            # new, and the bench times this call as the per-turn cost.
            features = route_features(self.backbone.model, [ids])
            with torch.no_grad():
                soft, attention = self.projector(slots.to(self.device), features)
            return soft[0], attention[0]
        with torch.no_grad():
            if ids:
                q = self.backbone.embed(torch.tensor([ids], device=self.device)).float()
                mask = torch.ones(1, len(ids), device=self.device)
            else:  # an empty message pools to zero, as in the projector's no-query path
                q, mask = None, None
            soft, attention = self.projector(slots.to(self.device), q, mask)
        return soft[0], attention[0]

    def fresh_slots(self, turns: list[tuple[str, str]], *, seed: int = 0) -> torch.Tensor:
        """Slots before any refit [N, d_s] fp32 on CPU: the embeddings of the history's salient
        tokens (``salient.py``), topped up with vocabulary-token init (the usual prompt-tuning
        start), which is all a profile without history gets."""
        if self.config.routed:
            return bank_slots(self.backbone.model, self.chat, self.projector, turns, seed=seed)
        return salient_slots(self.backbone.model, self.chat, turns, self.config, seed=seed)

    def grown_slots(
        self,
        slots: torch.Tensor,
        turns: list[tuple[str, str]],
        change: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """A refit's starting bank and low-rank change (A, B): a routed bank files the messages
        that have no group yet, making room when it is full (``routing.extend_bank``); each
        row's part of the change (its row of A) moves with the row, and a row written afresh
        starts at zero. A flat memory starts where it is."""
        if not self.config.routed:
            return slots, change
        grown, sources = extend_bank(self.backbone.model, self.chat, self.projector, slots, turns)
        if change is not None:
            a, b = change
            change = (a[sources.clamp(min=0)] * (sources >= 0)[:, None], b)
        return grown, change

    def filed_statements(
        self, slots: torch.Tensor, turns: list[tuple[str, str]]
    ) -> set[str] | None:
        """A routed bank's filed messages' statements (``routing.filed_statements``), the ones a
        refit probes; None for a flat memory, which probes the newest messages."""
        if not self.config.routed:
            return None
        return filed_statements(self.backbone.model, self.chat, self.projector, slots, turns)

    def decode(
        self, version: MemoryVersion
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """A version's slots [N, d_s] and its low-rank change (A, B) or None, fp32 on CPU, from
        one parse of its blob; or ``BadBundle`` saying why they cannot be read here (damaged
        blob, another memory shape, another backbone)."""
        where = f"memory version #{version.id}"
        if version.tensors is None:
            raise ValueError("decode() needs a version loaded with its tensors")
        slots, config, change = memory_from_bytes(version.tensors, where=where)
        if (config.n_slots, config.slot_dim) != (self.config.n_slots, self.config.slot_dim):
            raise BadBundle(
                f"slots of shape {config.n_slots}x{config.slot_dim} do not fit this "
                f"memory ({self.config.n_slots}x{self.config.slot_dim})",
                where=where,
            )
        if version.backbone and version.backbone != self.backbone.name:
            raise BadBundle(
                f"fitted for backbone {version.backbone!r}, not {self.backbone.name!r}", where=where
            )
        if (
            self.config.routed
            and version.projector_sha256
            and version.projector_sha256 != self.projector_sha256
        ):
            # A bank's keys are readings by its projector: read by another (an older routing
            # layer), every question would route by chance. The next refit builds a new bank.
            raise BadBundle(
                "a routed bank keyed by another projector (an earlier routing layer); the next "
                "refit rebuilds it from the history",
                where=where,
            )
        if change is not None:
            change = (change[0].float(), change[1].float())
        return slots.float(), change


def load_frozen_memory(
    backbone,
    config: MemoryConfig | None = None,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> FrozenMemory:
    """The projector for ``backbone``: shipped weights if they exist (and fit ``config`` when
    one is given), else the identity projector for ``config`` or ``default_config``.

    ``system_prompt`` is the chat's: refits encode the history under the same system turn the
    chat puts before every reply, so slots are fitted in the context they are read in."""
    from lpm_local.backbones.registry import projector_path

    chat = ChatFormat(backbone.tokenizer, system_prompt)
    path = projector_path(backbone.name)
    projector, shipped = None, False
    if path is not None:
        candidate = Projector.load(path)
        if config is None or candidate.config == config:
            projector, shipped = candidate, True
    if projector is None:
        config = config or default_config(backbone.hidden_size)
        if config.routed:
            projector = RoutedProjector(config)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(IDENTITY_SEED)
                projector = prompt_tuning_projector(config)
    if projector.config.hidden_size != backbone.hidden_size:
        raise ModelNotAvailable(
            f"projector for hidden size {projector.config.hidden_size} cannot "
            f"drive {backbone.name} (hidden size {backbone.hidden_size})"
        )
    sha = projector.sha256()
    projector.to(backbone.device).eval().requires_grad_(False)
    return FrozenMemory(backbone, projector, projector.config, sha, shipped, chat)


@dataclass(frozen=True)
class LoadedSlots:
    """The profile's current memory as this backbone can use it."""

    slots: torch.Tensor | None  # [N, d_s] fp32 CPU; None: no usable version
    version_id: int | None  # the profile's current version (even when unusable)
    problem: str | None = None  # why a current version could not be used
    # A routed bank's learned low-rank change (A, B), which ``slots`` already holds; None for a
    # flat memory or a bank stored before changes were.
    change: tuple[torch.Tensor, torch.Tensor] | None = None


def current_slots(store: Store, frozen: FrozenMemory, profile_id: int) -> LoadedSlots:
    """Read and check the profile's current version (sha256 by the store, then shape, dtype,
    finiteness, memory shape and backbone); a version that fails is reported, not raised, so the
    chat goes on without memory and the next refit replaces it."""
    try:
        version = store.current_memory_version(profile_id)
    except CorruptDatabase as exc:
        current = store.get_profile_by_id(profile_id).current_version_id
        return LoadedSlots(None, current, str(exc))
    if version is None:
        return LoadedSlots(None, None)
    try:
        slots, change = frozen.decode(version)
        return LoadedSlots(slots, version.id, change=change)
    except BadBundle as exc:
        return LoadedSlots(None, version.id, str(exc))
