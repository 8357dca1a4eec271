"""A slot bank read through routing: many more slots than soft tokens, a fixed cost per turn.

A flat memory feeds all of its slots to every turn, so what it can hold is bounded by the soft
tokens a turn can afford (32). A routed memory is a bank of ``route_groups`` groups; each group
is one *key* row followed by ``group_tokens`` token rows. Per message, the ``route_pick`` groups
whose keys are nearest to the message become the turn's soft tokens (token rows in bank order),
so a turn still costs ``route_pick * group_tokens`` soft tokens whatever the bank's size, and a
question reads the groups written for what it asks.

- A key is what the frozen backbone makes of one user message: its hidden states at an early
  layer (``route_layer``), each token's state unit-normalised (a few positions carry huge
  activations and would otherwise be all a mean sees), averaged over the message without its
  first token. A query is the same reading of the current message. Measured on Qwen2.5-0.5B with
  two 16-fact personas, each question ("What is my job?") against its persona's 16 messages,
  centred on the bank's mean key: layer 6 of 24 finds its own message first for 29 of 32
  questions and within the nearest four for all 32 (layer 21: 30 and 32; raw mean hidden states:
  2 of 16 at layers 3-22); for 32 paraphrases sharing few words with the message ("Do I have any
  pets?"), 20 and 28 of 32 (layer 21: 19 and 30). A reading stops at its layer
  (``_read_layer``), so layer 6 costs about a quarter of a forward.
- Keys never move: routing is a hard choice, so no gradient reaches a key row, and Adam leaves a
  row with zero gradient where it is. A fit therefore teaches each group what the questions
  routed to it need, and the same question routes the same way afterwards.
- An all-zero key marks an empty group: it is chosen only when fewer groups hold a key than a
  turn reads. A refit fills empty groups from messages that tell something and have none yet
  (``extend_bank``: a message's statements, never its questions), so the memory's capacity
  grows with the history until the bank is full; from then on a new message is learned by the
  groups its questions route to.
- Key and token rows share one ``[N, hidden]`` tensor, the storage format of every memory, so
  versions, bundles and wipes treat a bank like any other memory.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections.abc import Sequence

import torch
from torch import nn

from lpm_local.chat.encoding import ChatFormat
from lpm_local.memory.config import MemoryConfig, heads_for
from lpm_local.memory.salient import token_surprise, user_messages
from lpm_local.memory.slots import init_slots
from lpm_local.memory.statements import statement_positions, tells_something
from lpm_local.memory.windows import history_tokens

# Share of the backbone's layers below the routing layer: 6 of Qwen2.5-0.5B's 24. Measured above:
# the late layers (21-23) route as well but cost 4x the time per turn (a 5-token question read at
# layer 21: 426 ms, at layer 7: 156 ms, one thread); layers 12-16 route worse (7-11 of 16 first on
# the second persona). The facts answered after a refit (README): layer 6 9 and 10 of 16 on the
# two personas, layer 21 10 and 8.
ROUTE_DEPTH = 0.25
# A message longer than this is read by its last tokens (a pasted document as a query).
MAX_ROUTE_TOKENS = 512
# Messages the bank initialisation and extension read at most (newest first): each costs a
# forward pass of its own tokens.
MAX_KEYED_MESSAGES = 256
# Message readings a projector remembers (oldest dropped first): a refit's windows, many times.
READINGS_KEPT = 4096
# A message whose reading is this close to a key already has its group.
SAME_KEY = 0.999


def bank_config(
    hidden_size: int, *, soft_tokens: int = 32, groups: int = 32, pick: int = 4
) -> MemoryConfig:
    """A routed bank of ``groups`` groups, ``pick`` of them read per turn, ``soft_tokens`` soft
    tokens in all (``soft_tokens // pick`` token rows per group)."""
    tokens = soft_tokens // pick
    return MemoryConfig(
        hidden_size=hidden_size,
        slot_dim=hidden_size,
        heads=heads_for(hidden_size),
        n_slots=groups * (tokens + 1),
        n_soft_tokens=soft_tokens,
        identity_path=False,
        route_groups=groups,
        route_pick=pick,
    )


def route_layer(model: nn.Module) -> int:
    """Index into ``hidden_states`` (0 = embeddings) of the layer keys and queries are read at."""
    layers = int(model.config.num_hidden_layers)
    return max(1, min(layers, round(ROUTE_DEPTH * layers)))


def route_features(model: nn.Module, messages: Sequence[Sequence[int]]) -> torch.Tensor:
    """The routing reading of each message's content ids: [B, H] fp32 on CPU (zero for an empty
    message). One no-grad forward per message, of its own tokens only, that stops at the routing
    layer (``_read_layer``)."""
    device = model.get_input_embeddings().weight.device
    layer = route_layer(model)
    rows = []
    for ids in messages:
        ids = list(ids)[-MAX_ROUTE_TOKENS:]
        if not ids:
            rows.append(torch.zeros(model.config.hidden_size))
            continue
        with torch.no_grad():
            states = _read_layer(model, torch.tensor([ids], device=device), layer)[0].float()
        states = states[1:] if len(ids) > 1 else states  # the first position is an attention sink
        rows.append(nn.functional.normalize(states, dim=-1).mean(dim=0).cpu())
    return torch.stack(rows)


class _ReadOut(Exception):
    """Carries the routing layer's output out of the forward that produced it."""

    def __init__(self, states: torch.Tensor):
        super().__init__("routing read-out")
        self.states = states


# The decoder layer whose output the current context is reading (None: a normal forward). A
# context variable, so a chat thread's forward through the same shared model never stops early.
_reading: contextvars.ContextVar[nn.Module | None] = contextvars.ContextVar(
    "lpm_route_reading", default=None
)
_hook_lock = threading.Lock()  # two threads' first readings install one hook, not two


def _stop_here(module: nn.Module, args, output) -> None:
    if _reading.get() is module:
        raise _ReadOut(output[0] if isinstance(output, tuple) else output)


def _read_layer(model: nn.Module, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """``hidden_states[layer]`` of one forward [1, T, H], computed only up to that layer.

    The layers above it, the final norm and the LM head (a quarter of Qwen2.5-0.5B's compute per
    token: 151,936 x 896) are skipped: a hook on the layer raises its output out of the forward.
    A backbone whose decoder layers cannot be found runs the whole forward instead."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    # The last entry of ``hidden_states`` is the final norm's output, not the top layer's.
    if layers is None or not 0 < layer < len(layers):
        out = model(input_ids=input_ids, output_hidden_states=True)
        return out.hidden_states[layer]
    target = layers[layer - 1]
    if not getattr(target, "_lpm_route_hook", False):
        with _hook_lock:
            if not getattr(target, "_lpm_route_hook", False):
                target.register_forward_hook(_stop_here)
                target._lpm_route_hook = True
    token = _reading.set(target)
    try:
        decoder(input_ids=input_ids, use_cache=False)
    except _ReadOut as done:
        return done.states
    finally:
        _reading.reset(token)
    raise RuntimeError(f"the forward never reached decoder layer {layer - 1}")


class RoutedProjector(nn.Module):
    """Slot bank [G * (1 + g), H] + per-message readings [B, H] -> soft tokens [B, pick * g, H].

    No trained weights: the choice is the keys' nearness to the message. ``forward`` returns the
    same (soft, attention) pair as ``Projector``; the attention is one-hot (soft token m read
    slot n), repeated over ``config.heads`` so the inspector reads it like any other."""

    kind = "routed bank"

    def __init__(self, config: MemoryConfig):
        super().__init__()
        if not config.routed:
            raise ValueError("RoutedProjector needs a MemoryConfig with route_groups > 0")
        self.config = config
        self._readings: dict[tuple[int, ...], torch.Tensor] = {}
        self._readings_lock = threading.Lock()

    def features(self, model: nn.Module, messages: Sequence[Sequence[int]]) -> torch.Tensor:
        """``route_features``, remembered per message: a fit reads the same windows every step
        and the backbone is frozen, so each message is read once per fit."""
        keys = [tuple(m) for m in messages]
        with self._readings_lock:  # one projector serves every profile's refit thread
            known = {k: self._readings[k] for k in keys if k in self._readings}
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            fresh = dict(zip(missing, route_features(model, missing)))
            known.update(fresh)
            with self._readings_lock:
                for k, row in fresh.items():
                    if len(self._readings) >= READINGS_KEPT:
                        self._readings.pop(next(iter(self._readings)))
                    self._readings[k] = row
        return torch.stack([known[k] for k in keys])

    def key_rows(self) -> list[int]:
        step = self.config.group_tokens + 1
        return list(range(0, self.config.n_slots, step))

    def filled(self, slots: torch.Tensor) -> torch.Tensor:
        """[G] bool: which groups hold a key (an all-zero key row marks an empty group)."""
        return slots[self.key_rows()].detach().abs().sum(dim=-1) > 0

    def token_rows(self, group: int) -> list[int]:
        start = group * (self.config.group_tokens + 1) + 1
        return list(range(start, start + self.config.group_tokens))

    def choose(self, slots: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Indices [B, pick] of the groups each message reads, in bank order."""
        c = self.config
        keys = slots[self.key_rows()].detach().float()  # [G, H]
        held = self.filled(slots)
        centre = keys[held].mean(dim=0) if held.any() else torch.zeros_like(keys[0])
        k = nn.functional.normalize(keys - centre, dim=-1)
        q = nn.functional.normalize(features.float().to(keys.device) - centre, dim=-1)
        scores = q @ k.T  # [B, G], cosine in [-1, 1]
        scores = scores.masked_fill(~held, -2.0)  # empty groups last, in bank order
        scores = scores - 1e-6 * torch.arange(c.route_groups, device=keys.device)
        picked = scores.topk(c.route_pick, dim=-1).indices
        return picked.sort(dim=-1).values

    def forward(
        self, slots: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """slots [N, H]; features [B, H] (``route_features``). Returns (soft [B, M, H] fp32,
        attention [B, heads, M, N]). Gradients flow into the chosen token rows only."""
        c = self.config
        slots = slots.float()
        if slots.dim() != 2 or tuple(slots.shape) != (c.n_slots, c.slot_dim):
            raise ValueError(f"slots shape {tuple(slots.shape)} does not fit {c}")
        groups = self.choose(slots, features)  # [B, pick]
        rows = torch.tensor(
            [[r for g in picked for r in self.token_rows(g)] for picked in groups.tolist()],
            device=slots.device,
        )  # [B, M]
        soft = slots[rows]  # [B, M, H]
        attention = torch.zeros(len(rows), c.n_soft_tokens, c.n_slots, device=slots.device)
        attention.scatter_(2, rows.unsqueeze(-1), 1.0)
        return soft, attention.unsqueeze(1).expand(-1, c.heads, -1, -1)

    def writes(self, slots: torch.Tensor) -> torch.Tensor:
        """What each row writes into the input when chosen: the row itself (keys write nothing,
        but are returned as they are so rows and labels stay aligned)."""
        return slots.float()

    def sha256(self) -> str:
        """No weights to hash: the config and the reading are the whole projector. A bank's keys
        are readings at one depth, so a bank keyed at another depth is another projector's."""
        reading = f"lpm-routed/2 depth={ROUTE_DEPTH}"
        return hashlib.sha256((reading + self.config.to_json()).encode()).hexdigest()


def bank_slots(
    model: nn.Module,
    chat: ChatFormat,
    projector: RoutedProjector,
    turns: Sequence[tuple[str, str]],
    *,
    seed: int = 0,
) -> torch.Tensor:
    """A fresh bank [N, H] fp32 on CPU: empty groups (zero keys, vocabulary-token rows), then
    filled from the history's user messages by ``extend_bank``."""
    slots = init_slots(projector.config, model.get_input_embeddings().weight, seed=seed)
    slots[projector.key_rows()] = 0.0
    return extend_bank(model, chat, projector, slots, turns)


def extend_bank(
    model: nn.Module,
    chat: ChatFormat,
    projector: RoutedProjector,
    slots: torch.Tensor,
    turns: Sequence[tuple[str, str]],
) -> torch.Tensor:
    """Give empty groups to the user messages that tell something and have no key yet (most
    surprising first): key = the message's reading, token rows = the embeddings of its most
    surprising words. Groups that hold a key are returned unchanged. A new tensor; ``slots`` is
    not modified."""
    config = projector.config
    slots = slots.detach().float().cpu().clone()
    filled = projector.filled(slots)
    empty = [g for g in range(config.route_groups) if not filled[g]]
    if not empty:
        return slots
    ids, roles = history_tokens(chat, turns, config.salient_max_tokens)
    # Only what a message tells gets a group: its statements (``statements.py``), read
    # without its questions. A question asked in the chat ("What is my job?") would otherwise be
    # filed under its own reading, and the same question asked again would read its group (the
    # question's words) instead of the fact's. Measured on a 16-fact persona: after the 16
    # questions were asked and a second refit filed them, 0 of 16 facts answered (8 before it);
    # with questions kept out, the same second refit answered the same 8.
    decode = chat.tokenizer.decode
    messages = []
    for message in user_messages(roles):
        told = statement_positions(decode, ids, message)
        if len(told) > 1 and tells_something(decode([ids[i] for i in told])):
            messages.append(told)
    messages = messages[-MAX_KEYED_MESSAGES:]
    # Remembered readings: a later refit re-reads only the messages it has not seen.
    texts = [[ids[i] for i in m] for m in messages]
    readings = projector.features(model, texts) if texts else []
    keyed = [slots[projector.key_rows()[g]] for g in range(config.route_groups) if filled[g]]
    # A message already filed (this one, or the same words said again) gets no new group.
    fresh = [i for i in range(len(messages)) if not any(_same(readings[i], k) for k in keyed)]
    if not fresh:  # every message has its group: no surprise pass over the history
        return slots
    surprise = token_surprise(model, ids)
    weight = model.get_input_embeddings().weight
    words = {i: any(ch.isalnum() for ch in chat.tokenizer.decode([i])) for i in set(ids)}
    best = {i: max(float(surprise[p]) for p in messages[i][1:]) for i in fresh}
    chosen = []
    for i in sorted(fresh, key=lambda i: -best[i]):
        if len(chosen) == len(empty):
            break
        if not any(_same(readings[i], readings[j]) for j in chosen):  # said twice: one group
            chosen.append(i)
    for group, i in zip(empty, sorted(chosen)):  # groups keep the order the messages came in
        slots[projector.key_rows()[group]] = readings[i]
        candidates = [p for p in messages[i][1:] if words[ids[p]]]
        ranked = sorted(candidates, key=lambda p: -float(surprise[p]))
        picked = list(dict.fromkeys(ids[p] for p in ranked))[: config.group_tokens]
        if picked:
            rows = projector.token_rows(group)[: len(picked)]
            with torch.no_grad():
                slots[rows] = weight[torch.tensor(picked, device=weight.device)].float().cpu()
    return slots


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float(nn.functional.cosine_similarity(a, b, dim=0)) >= SAME_KEY


__all__ = [
    "RoutedProjector",
    "bank_config",
    "bank_slots",
    "extend_bank",
    "route_features",
    "route_layer",
]
