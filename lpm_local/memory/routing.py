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
  turn reads. A refit files the messages that tell something and have no group yet, in the order
  they came in (``extend_bank``: a message's statements, never its questions), so the memory's
  capacity grows with the history until the bank is full. From then on a newer message takes
  the place of the older of the two most alike groups (``_retire``): a changed taste ("My
  favourite dish these days is spicy ramen") replaces what it updates ("My favourite dish is
  mushroom risotto") when the two are each other's nearest, as 6 of 8 updates on a 40-message
  persona were, so the memory keeps up with what the user tells it now.
- Key and token rows share one ``[N, hidden]`` tensor, the storage format of every memory, so
  versions, bundles and wipes treat a bank like any other memory.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lpm_local.chat.encoding import ChatFormat
from lpm_local.memory.config import MemoryConfig, heads_for
from lpm_local.memory.salient import token_surprise, user_messages
from lpm_local.memory.slots import init_slots
from lpm_local.memory.statements import collapsed, statement_positions, tells_something
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
    return extend_bank(model, chat, projector, slots, turns)[0]


def extend_bank(
    model: nn.Module,
    chat: ChatFormat,
    projector: RoutedProjector,
    slots: torch.Tensor,
    turns: Sequence[tuple[str, str]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """File the user messages that tell something and have no group yet, in the order they came
    in: key = the message's reading, token rows = the embeddings of its most surprising words.

    While the bank has empty groups a message takes one. When it is full, a message newer than
    every filed one still gets a group: the older of the two most alike groups (the new message
    among them) makes way (``_retire``), so a newer taste replaces the older one it is most like
    and the memory keeps learning from what the user tells it now. Groups stay in the order
    their messages came in (filed groups first, oldest first; then the empty ones), which is
    what "older" reads.

    Returns (slots, sources): a new tensor (``slots`` is not modified), and for each of its rows
    the row of ``slots`` it holds, or -1 for a row written afresh (a refit starts the learned
    change of such a row at zero). Nothing to file: ``slots`` as it was and every row its own."""
    config = projector.config
    slots = slots.detach().float().cpu().clone()
    unchanged = (slots, torch.arange(config.n_slots))
    ids, messages = _telling_messages(chat, config, turns)
    if not messages:
        return unchanged
    # Remembered readings: a later refit re-reads only the messages it has not seen.
    readings = projector.features(model, [[ids[i] for i in m] for m in messages])
    keys = slots[projector.key_rows()]
    filled = projector.filled(slots)
    held: list[int | _Filed] = [g for g in range(config.route_groups) if filled[g]]
    empty = [g for g in range(config.route_groups) if not filled[g]]
    # A message already filed (this one, or the same words said again) gets no new group. One
    # left out before (it made way when the bank was full) stays out: only messages after the
    # newest filed one may take a group from another.
    filed = [any(_same(readings[i], keys[g]) for g in held) for i in range(len(messages))]
    newest = max((i for i, f in enumerate(filed) if f), default=-1)
    chosen: list[int] = []
    for i in range(len(messages)):
        if filed[i] or any(_same(readings[i], readings[j]) for j in chosen):
            continue  # said twice: one group
        if empty:
            held.append(_Filed(i, empty.pop(0)))
        elif i > newest:
            held.pop(_retire([_key(e, keys, readings) for e in held] + [readings[i]]))
            held.append(_Filed(i, None))
        else:
            continue
        chosen.append(i)
    if not chosen:
        return unchanged
    return _lay_out(model, chat, projector, slots, held + empty, ids, messages, readings)


def filed_statements(
    model: nn.Module,
    chat: ChatFormat,
    projector: RoutedProjector,
    slots: torch.Tensor,
    turns: Sequence[tuple[str, str]],
) -> set[str]:
    """The statements of the history's messages that hold a group of the bank (each as
    ``statements.statement_text`` gives it, through ``statements.collapsed``): what a refit
    probes, so every refit teaches each group its own message again rather than only the
    newest ones."""
    ids, messages = _telling_messages(chat, projector.config, turns)
    held = projector.filled(slots)
    if not messages or not held.any():
        return set()
    readings = projector.features(model, [[ids[i] for i in m] for m in messages])
    keys = slots[projector.key_rows()].detach().float().cpu()[held]
    decode = chat.tokenizer.decode
    return {
        collapsed(decode([ids[p] for p in m]))
        for m, reading in zip(messages, readings, strict=True)
        if any(_same(reading, key) for key in keys)
    }


def _telling_messages(
    chat: ChatFormat, config: MemoryConfig, turns: Sequence[tuple[str, str]]
) -> tuple[list[int], list[list[int]]]:
    """The history's content ids, and for each user message that tells something (the newest
    ``MAX_KEYED_MESSAGES``, in order) the positions of its statements.

    Only what a message tells gets a group: its statements (``statements.py``), read without its
    questions. A question asked in the chat ("What is my job?") would otherwise be filed under
    its own reading, and the same question asked again would read its group (the question's
    words) instead of the fact's. Measured on a 16-fact persona: after the 16 questions were
    asked and a second refit filed them, 0 of 16 facts answered (8 before it); with questions
    kept out, the same second refit answered the same 8."""
    ids, roles = history_tokens(chat, turns, config.salient_max_tokens)
    decode = chat.tokenizer.decode
    messages = []
    for message in user_messages(roles):
        told = statement_positions(decode, ids, message)
        if len(told) > 1 and tells_something(decode([ids[i] for i in told])):
            messages.append(told)
    return ids, messages[-MAX_KEYED_MESSAGES:]


@dataclass(frozen=True)
class _Filed:
    """A message filed by this extension: its index in ``messages``, and the empty group whose
    rows it fills (None: the rows of a group that made way, which it rewrites)."""

    message: int
    group: int | None


def _key(entry: int | _Filed, keys: torch.Tensor, readings: torch.Tensor) -> torch.Tensor:
    return readings[entry.message] if isinstance(entry, _Filed) else keys[entry]


def _retire(keys: list[torch.Tensor]) -> int:
    """Which group makes way for the newest message: ``keys`` are the bank's filed keys, oldest
    first, then the message's reading; the answer indexes them. The older of the two most alike,
    centred as ``choose`` centres them. When the newest is one of the pair, it is the other one:
    a changed taste retires the message it updates when the two are each other's nearest."""
    stacked = torch.stack(keys).float()
    unit = nn.functional.normalize(stacked - stacked.mean(dim=0), dim=-1)
    alike = unit @ unit.T
    alike.fill_diagonal_(-2.0)
    first, second = divmod(int(alike.argmax()), len(keys))
    return min(first, second)  # never the newest: it is the last


def _lay_out(
    model: nn.Module,
    chat: ChatFormat,
    projector: RoutedProjector,
    slots: torch.Tensor,
    layout: list[int | _Filed],
    ids: list[int],
    messages: list[list[int]],
    readings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank with group ``p`` holding ``layout[p]``: a group of ``slots`` moved there, or a
    message filed there (its reading as key, its most surprising words as token rows)."""
    config = projector.config
    step = config.group_tokens + 1
    out = torch.empty_like(slots)
    sources = torch.full((config.n_slots,), -1, dtype=torch.long)
    weight = model.get_input_embeddings().weight
    surprise = token_surprise(model, ids)
    words = {i: any(ch.isalnum() for ch in chat.tokenizer.decode([i])) for i in set(ids)}
    fresh = None  # vocabulary-token rows for a group that made way, made only when needed
    for place, entry in enumerate(layout):
        rows = slice(place * step, (place + 1) * step)
        old = entry.group if isinstance(entry, _Filed) else entry
        if old is not None:  # a group moved, or an empty one filled: its rows come along
            out[rows] = slots[old * step : (old + 1) * step]
            sources[rows] = torch.arange(old * step, (old + 1) * step)
        else:  # the rows of the group that made way hold its words: start from vocabulary rows
            if fresh is None:
                fresh = init_slots(config, weight, seed=0)
            out[rows] = fresh[rows]
        if not isinstance(entry, _Filed):
            continue
        message = messages[entry.message]
        out[place * step] = readings[entry.message]
        sources[place * step] = -1
        candidates = [p for p in message[1:] if words[ids[p]]]
        ranked = sorted(candidates, key=lambda p: -float(surprise[p]))
        picked = list(dict.fromkeys(ids[p] for p in ranked))[: config.group_tokens]
        if picked:
            token_rows = projector.token_rows(place)[: len(picked)]
            with torch.no_grad():
                out[token_rows] = weight[torch.tensor(picked, device=weight.device)].float().cpu()
            sources[token_rows] = -1
    return out, sources


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float(nn.functional.cosine_similarity(a, b, dim=0)) >= SAME_KEY


__all__ = [
    "RoutedProjector",
    "bank_config",
    "bank_slots",
    "extend_bank",
    "filed_statements",
    "route_features",
    "route_layer",
]
