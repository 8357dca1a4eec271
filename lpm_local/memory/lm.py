"""Language-model losses with a soft prefix: the one forward that fitting, training and the
experiment share.

``inputs_embeds = cat(soft [B, M, H] cast once to the embedding dtype, embed(ids) [B, L, H])``,
attention mask ones over the prefix, no loss on it. Only labelled positions go through the
output head (a 49k-vocab head over every position would be a fifth of the compute for nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lpm_local.memory.windows import IGNORE, Window


def resolve_model(model_or_engine) -> nn.Module:
    """An HF causal LM from a model, a ``Backbone`` (``.model``) or a ``ChatEngine``
    (``.backbone.model``): fitting code accepts any of the three."""
    obj = model_or_engine
    if hasattr(obj, "backbone") and not isinstance(obj, nn.Module):
        obj = obj.backbone
    if hasattr(obj, "model") and not isinstance(obj, nn.Module):
        obj = obj.model
    if not isinstance(obj, nn.Module) or not hasattr(obj, "get_input_embeddings"):
        raise TypeError(
            f"expected a causal LM, Backbone or ChatEngine, got {type(model_or_engine).__name__}"
        )
    return obj


def pad_id_of(model: nn.Module) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def collate(
    windows: Sequence[Window], pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (ids [B, L], labels [B, L], mask [B, L])."""
    length = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(windows), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(windows), length), dtype=torch.long)
    for i, w in enumerate(windows):
        n = len(w.input_ids)
        ids[i, :n] = torch.tensor(w.input_ids)
        labels[i, :n] = torch.tensor(w.labels)
        mask[i, :n] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def query_inputs(model: nn.Module, windows: Sequence[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings of each window's query message: ([B, T, H], mask [B, T]); T >= 1."""
    device = model.get_input_embeddings().weight.device
    length = max([1] + [len(w.query_ids) for w in windows])
    ids = torch.zeros((len(windows), length), dtype=torch.long, device=device)
    mask = torch.zeros((len(windows), length), device=device)
    for i, w in enumerate(windows):
        if w.query_ids:
            ids[i, : len(w.query_ids)] = torch.tensor(w.query_ids, device=device)
            mask[i, : len(w.query_ids)] = 1
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    return embeds.float(), mask


def token_logprobs(
    model: nn.Module, soft: torch.Tensor | None, windows: Sequence[Window]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window (sum of target-token log-probs [B], number of target tokens [B]).

    ``soft`` is [B, M, H] (or None: the bare backbone). Gradients flow into ``soft``."""
    embed = model.get_input_embeddings()
    device = embed.weight.device
    ids, labels, mask = collate(windows, pad_id_of(model), device)
    x = embed(ids)  # [B, L, H]
    prefix = 0
    if soft is not None:
        prefix = soft.shape[1]
        x = torch.cat([soft.to(x.dtype), x], dim=1)  # the one cast at the concat
        mask = torch.cat(
            [torch.ones(mask.shape[0], prefix, dtype=mask.dtype, device=device), mask], dim=1
        )
    hidden = model.get_decoder()(inputs_embeds=x, attention_mask=mask).last_hidden_state
    # Position p (prefix-shifted) predicts token p+1: gather only labelled targets.
    target = labels[:, 1:]
    rows, cols = (target != IGNORE).nonzero(as_tuple=True)
    h = hidden[rows, cols + prefix]  # [K, H]
    logits = model.get_output_embeddings()(h).float()
    lp = logits.log_softmax(dim=-1).gather(1, target[rows, cols].unsqueeze(1)).squeeze(1)
    sums = torch.zeros(len(windows), device=device).index_add(0, rows, lp)
    counts = torch.zeros(len(windows), device=device).index_add(0, rows, torch.ones_like(lp))
    return sums, counts


def mean_loss(
    model: nn.Module, soft: torch.Tensor | None, windows: Sequence[Window]
) -> torch.Tensor:
    """Token-mean negative log-likelihood over all targets of the batch (a scalar)."""
    sums, counts = token_logprobs(model, soft, windows)
    return -sums.sum() / counts.sum().clamp(min=1.0)


def soft_for(
    model: nn.Module, projector, slots: torch.Tensor, windows: Sequence[Window]
) -> torch.Tensor:
    """Soft prefixes [B, M, H] for one user's slots [N, d_s] (or per-window slots [B, N, d_s]).

    ``projector=None`` is prompt tuning: the slots *are* the soft tokens."""
    if projector is None:
        soft = slots if slots.dim() == 3 else slots.unsqueeze(0).expand(len(windows), -1, -1)
        return soft.float()
    if projector.config.routed:  # a routed bank: groups chosen per window's message
        soft, _ = projector(slots, projector.features(model, [w.route_ids for w in windows]))
        return soft
    q, qmask = query_inputs(model, windows)
    soft, _ = projector(slots, q, qmask)
    return soft
