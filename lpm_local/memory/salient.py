"""Salient-token slot initialisation: a user's history -> initial slots, with no training.

Prompt tuning starts every user from the same kind of point (random vocabulary embeddings) and
has only a few gradient steps to write the user in. LPM starts each user from their own words:
slot n is the input embedding of one of the most *surprising* tokens the user wrote, surprise
measured by the frozen backbone itself (``-log p(token | preceding history)``). Surprising
tokens are the ones a generic prompt cannot predict ("vegan", "snowboarding", "Cisco"), i.e.
exactly what is specific to this person, and a real token embedding is a soft token the
backbone already knows how to read. The refit then refines the slots with the same optimiser
and steps as prompt tuning.

Measured on SmolLM2 (PROJECTOR_CARD.md): mean-pooled message embeddings as soft tokens *hurt*;
starting from single salient-token embeddings, 10 fitting steps reach 60.8% recall where the
same steps from random vocabulary embeddings (prompt tuning) reach 40.0%.

Selection: user-message tokens only, never a message's first token (openers like "Also," are
always surprising and never informative), only tokens with a letter or digit, each token id at
most once; round-robin over messages (every message's best token before any message's second),
messages ordered by their best token's surprise, so a short history gets one slot per fact and a
long one keeps its most distinctive facts. Slots keep the order in which the user wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lpm_local.chat.encoding import ChatFormat
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.slots import init_slots
from lpm_local.memory.windows import ROLE_IDS, history_tokens

USER = ROLE_IDS["user"]
# Surprise is measured over chunks of this many tokens: the cost stays linear in the history
# and a chunk of a few turns is all the context "is this word predictable here" needs.
CHUNK_TOKENS = 512


def token_surprise(model, ids: list[int], chunk: int = CHUNK_TOKENS) -> torch.Tensor:
    """``-log p(ids[i] | ids[chunk start:i])`` under the frozen model, [L] fp32 on CPU; 0 for the
    first token of each chunk (it has no context)."""
    device = model.get_input_embeddings().weight.device
    parts = []
    for start in range(0, len(ids), chunk):
        piece = ids[start : start + chunk]
        if len(piece) == 1:
            parts.append(torch.zeros(1))
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([piece], device=device)).logits[0, :-1].float()
        target = torch.tensor(piece[1:], device=device).unsqueeze(1)
        surprise = -logits.log_softmax(dim=-1).gather(1, target).squeeze(1)
        parts.append(torch.cat([torch.zeros(1, device=device), surprise]).cpu())
    return torch.cat(parts) if parts else torch.zeros(0)


def user_messages(roles: Sequence[int]) -> list[list[int]]:
    """Token positions of each user message (maximal runs of user tokens), in order."""
    messages, current = [], []
    for i, role in enumerate(roles):
        if role == USER:
            current.append(i)
        elif current:
            messages.append(current)
            current = []
    if current:
        messages.append(current)
    return messages


def pick_salient(
    ids: Sequence[int],
    roles: Sequence[int],
    surprise: torch.Tensor,
    n: int,
    is_word: Sequence[bool],
) -> list[int]:
    """Positions of up to ``n`` salient user tokens (see the module doc), in history order."""
    ranked = []
    for message in user_messages(roles):
        candidates = [i for i in message[1:] if is_word[i]]
        if candidates:
            ranked.append(sorted(candidates, key=lambda i: -float(surprise[i])))
    ranked.sort(key=lambda r: -float(surprise[r[0]]))
    chosen, seen = [], set()
    for depth in range(max((len(r) for r in ranked), default=0)):
        for r in ranked:
            if len(chosen) == n:
                return sorted(chosen)
            if depth < len(r) and ids[r[depth]] not in seen:
                chosen.append(r[depth])
                seen.add(ids[r[depth]])
    return sorted(chosen)


def salient_token_ids(
    model, chat: ChatFormat, turns: Sequence[tuple[str, str]], n: int, max_tokens: int
) -> list[int]:
    """Up to ``n`` distinct token ids: the most surprising words of the user's messages among
    the last ``max_tokens`` history tokens."""
    ids, roles = history_tokens(chat, turns, max_tokens)
    if len(ids) < 2 or USER not in roles:
        return []
    surprise = token_surprise(model, ids)
    words = {i: any(ch.isalnum() for ch in chat.tokenizer.decode([i])) for i in set(ids)}
    positions = pick_salient(ids, roles, surprise, n, [words[i] for i in ids])
    return [ids[p] for p in positions]


def salient_slots(
    model,
    chat: ChatFormat,
    turns: Sequence[tuple[str, str]],
    config: MemoryConfig,
    *,
    seed: int = 0,
) -> torch.Tensor:
    """Initial slots [N, d_s] fp32 on CPU: embeddings of the history's salient tokens, the rest
    (short histories, or slots narrower than the embeddings) from the prompt-tuning init."""
    weight = model.get_input_embeddings().weight
    slots = init_slots(config, weight, seed=seed)
    if config.slot_dim != weight.shape[1]:
        return slots
    chosen = salient_token_ids(model, chat, turns, config.n_slots, config.salient_max_tokens)
    if chosen:
        with torch.no_grad():
            picked = weight[torch.tensor(chosen, device=weight.device)].detach().float().cpu()
        slots[: len(chosen)] = picked
    return slots


__all__ = ["pick_salient", "salient_slots", "salient_token_ids", "token_surprise", "user_messages"]
