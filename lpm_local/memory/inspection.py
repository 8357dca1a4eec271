"""Looking into a memory: per slot a label, its usage and the conversations that shaped it, and
which slots a reply attended to.

- Label: the vocabulary tokens nearest (cosine, input-embedding space) to what the slot writes
  through the projector (``out(value(s)) + identity(s)``): cheap, and honest about what the slot
  holds in the backbone's own terms. Token text is untrusted and shown as plain text.
- Usage: each reply's attention ``[heads, M, N]`` is stored with the reply (table
  ``reply_attention``, migration ``m003_reply_attention``); a slot's usage is its mean attention
  mass over the recent replies.
- Sources: during a refit each conversation's gradient on the slots (at the starting slots) is
  measured; its per-slot share, merged with the parent version's (halved), is kept in the
  version's ``config_json["sources"]``.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from lpm_local.errors import NotFound
from lpm_local.memory.lm import mean_loss, soft_for
from lpm_local.memory.tensorio import check_tensor, tensors_from_bytes, tensors_to_bytes
from lpm_local.memory.windows import Window
from lpm_local.storage.records import utc_now
from lpm_local.storage.store import Store

ATTENTION_FORMAT = "lpm-attention/1"
KEEP_REPLIES = 500  # stored reply attentions per profile (~1 KB each)
RECENT_REPLIES = 50  # replies a slot's usage is averaged over
SOURCE_DECAY = 0.5  # weight of the parent version's sources in a new version's
KEEP_SOURCES = 20  # conversations kept per version in the sources map
BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class SlotDescription:
    index: int
    label: str
    usage: float  # mean attention mass over recent replies (0 when none recorded)
    usage_history: list[float] = field(default_factory=list)  # oldest reply first
    sources: list[str] = field(default_factory=list)  # "#12 title", most influential first
    reply_usage: float | None = None  # this slot's mass in the reply being inspected
    kind: str = "slot"  # "group": a routed bank's group of token rows, shown as one
    rows: tuple[int, ...] = ()  # a group's slot rows (columns of a reply's attention)


# -- labels --------------------------------------------------------------------------------------


def slot_labels(frozen, slots: torch.Tensor, k: int = 3) -> list[str]:
    """Per slot, its ``k`` nearest vocabulary tokens (control tokens excluded), joined by " · "."""
    p, tok = frozen.projector, frozen.backbone.tokenizer
    weight = frozen.backbone.model.get_input_embeddings().weight
    with torch.no_grad():
        s = slots.float().to(weight.device)
        written = p.writes(s)  # [N, H]
        emb = torch.nn.functional.normalize(weight.float(), dim=-1)  # [V, H]
        sims = torch.nn.functional.normalize(written, dim=-1) @ emb.T  # [N, V]
        control = [
            i
            for i in set(getattr(tok, "all_special_ids", []))
            | set(getattr(tok, "added_tokens_decoder", {}) or {})
            if 0 <= i < sims.shape[1]
        ]
        sims[:, control] = -2.0
        top = sims.topk(min(k * 8, sims.shape[1]), dim=-1).indices.tolist()
    labels = []
    keys = set(p.key_rows())
    for row, ids in enumerate(top):
        if row in keys:  # a routed bank's key: a reading of a message, not a word
            labels.append("(routing key)")
            continue
        # A lone byte of a multi-byte character decodes to U+FFFD: not a word, skip it.
        words = [w for w in (_printable(tok.decode([i])) for i in ids) if w and "\ufffd" not in w][
            :k
        ]
        labels.append(" · ".join(words))
    return labels


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


# -- per-reply attention -------------------------------------------------------------------------


def record_reply_attention(
    store: Store, message_id: int, version_id: int | None, attention: torch.Tensor
) -> None:
    """Keep a reply's attention [heads, M, N] (fp32 safetensors); trims to KEEP_REPLIES."""
    blob = tensors_to_bytes(
        {"attention": attention.detach().float().cpu()}, {"format": ATTENTION_FORMAT}
    )
    with store.transaction():  # holds the store's lock for the raw statements below
        store.conn.execute(
            "INSERT OR REPLACE INTO reply_attention (message_id, version_id, created_at, "
            "attention) VALUES (?, ?, ?, ?)",
            [message_id, version_id, utc_now(), blob],
        )
        store.conn.execute(
            "DELETE FROM reply_attention WHERE message_id IN (SELECT r.message_id "
            "FROM reply_attention r JOIN messages m ON m.id = r.message_id "
            "JOIN conversations c ON c.id = m.conversation_id WHERE c.profile_id = "
            "(SELECT c2.profile_id FROM messages m2 JOIN conversations c2 ON c2.id = "
            "m2.conversation_id WHERE m2.id = ?) ORDER BY r.message_id DESC LIMIT -1 OFFSET ?)",
            [message_id, KEEP_REPLIES],
        )


def newest_reply_after(store: Store, profile_id: int, after_message_id: int) -> int | None:
    """The profile's newest assistant message with an id above ``after_message_id``."""
    return store._scalar(
        "SELECT max(m.id) FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.profile_id = ? AND m.role = 'assistant' AND m.id > ?",
        [profile_id, after_message_id],
    )


def newest_message_id(store: Store) -> int:
    return int(store._scalar("SELECT max(id) FROM messages") or 0)


def reply_attention(
    store: Store, message_id: int, *, profile_id: int | None = None
) -> tuple[torch.Tensor, int | None]:
    """(attention [heads, M, N], version id) stored for a reply (of ``profile_id`` when given),
    or ``NotFound``."""
    rows = store._rows(
        "SELECT r.version_id, r.attention FROM reply_attention r JOIN messages m ON "
        "m.id = r.message_id JOIN conversations c ON c.id = m.conversation_id "
        "WHERE r.message_id = ? AND (? IS NULL OR c.profile_id = ?)",
        [message_id, profile_id, profile_id],
    )
    if not rows:
        raise NotFound(
            f"no memory attention is recorded for message #{message_id} "
            "(memory was off, or it is not a reply)"
        )
    return _decode_attention(rows[0]["attention"], message_id), rows[0]["version_id"]


def recent_slot_usage(
    store: Store, profile_id: int, n_slots: int, limit: int = RECENT_REPLIES
) -> list[torch.Tensor]:
    """Per recent reply (oldest first), each slot's attention mass [N] (sums to 1)."""
    rows = store._rows(
        "SELECT r.message_id, r.attention FROM reply_attention r JOIN messages m ON "
        "m.id = r.message_id JOIN conversations c ON c.id = m.conversation_id WHERE "
        "c.profile_id = ? ORDER BY r.message_id DESC LIMIT ?",
        [profile_id, limit],
    )
    usage = []
    for row in reversed(rows):
        attention = _decode_attention(row["attention"], row["message_id"])
        if attention.shape[-1] == n_slots:  # rows from another memory shape are skipped
            usage.append(slot_mass(attention))
    return usage


def slot_mass(attention: torch.Tensor) -> torch.Tensor:
    """[heads, M, N] -> [N]: the share of all soft tokens' attention each slot received."""
    return attention.float().mean(dim=(0, 1))


def _decode_attention(blob: bytes, message_id: int) -> torch.Tensor:
    where = f"attention of message #{message_id}"
    tensors, meta = tensors_from_bytes(bytes(blob), where=where)
    t = tensors.get("attention")
    if meta.get("format") != ATTENTION_FORMAT or t is None or t.dim() != 3:
        raise NotFound(f"{where} is unreadable")
    check_tensor(t, name="attention", shape=tuple(t.shape), dtypes=(torch.float32,), where=where)
    return t


# -- sources -------------------------------------------------------------------------------------


def conversation_shares(
    frozen,
    slots: torch.Tensor,
    windows: list[Window],
    owner: dict[int, int],
    limit: int,
    *,
    cancel: threading.Event | None = None,
) -> dict[str, list[float]]:
    """Per conversation, per slot: its share of the gradient that the fitted windows put on the
    slot (at ``slots``), weighted by target tokens. At most ``limit`` windows are used."""
    groups: dict[int, list[Window]] = defaultdict(list)
    for w in windows[:limit]:
        groups[owner[id(w)]].append(w)
    model = frozen.backbone.model
    s = slots.detach().float().to(frozen.device).requires_grad_(True)
    norms: dict[int, torch.Tensor] = {}
    for conv, ws in groups.items():
        if cancel is not None and cancel.is_set():
            return {}
        with torch.enable_grad():
            loss = mean_loss(model, soft_for(model, frozen.projector, s, ws), ws)
            (grad,) = torch.autograd.grad(loss, [s])
        norms[conv] = grad.norm(dim=-1).cpu() * sum(w.n_targets for w in ws)
    if not norms:
        return {}
    total = torch.stack(list(norms.values())).sum(dim=0).clamp(min=1e-12)  # [N]
    return {str(c): [round(float(x), 4) for x in n / total] for c, n in norms.items()}


def merge_sources(
    new: dict, parent: dict, *, decay: float = SOURCE_DECAY, keep: int = KEEP_SOURCES
) -> dict[str, list[float]]:
    """New shares plus the parent's, halved; renormalised per slot; the top ``keep`` kept."""
    width = max((len(v) for v in (*new.values(), *parent.values())), default=0)
    merged: dict[str, list[float]] = {}
    for key in set(new) | set(parent):
        a, b = new.get(key, [0.0] * width), parent.get(key, [0.0] * width)
        if len(a) == len(b) == width:
            merged[key] = [x + decay * y for x, y in zip(a, b)]
    totals = [sum(v[i] for v in merged.values()) or 1.0 for i in range(width)]
    merged = {k: [round(x / t, 4) for x, t in zip(v, totals)] for k, v in merged.items()}
    best = sorted(merged, key=lambda k: max(merged[k], default=0.0), reverse=True)[:keep]
    return {k: merged[k] for k in best}


def slot_sources(
    store: Store, profile_id: int, config_json: str | None, n_slots: int, top: int = 3
) -> list[list[str]]:
    """Per slot, the still-learnable conversations that shaped it most, as "#id title"."""
    try:
        raw = json.loads(config_json or "{}").get("sources", {}) or {}
    except (json.JSONDecodeError, AttributeError):
        raw = {}
    titles = {
        str(c.id): c.title or "untitled"
        for c in store.list_conversations(profile_id)
        if not c.exclude_from_memory
    }
    out = []
    for n in range(n_slots):
        ranked = sorted(
            ((v[n], k) for k, v in raw.items() if k in titles and len(v) > n and v[n] > 0),
            reverse=True,
        )[:top]
        out.append([f"#{k} {_printable(titles[k])}" for _, k in ranked])
    return out


# -- putting it together -------------------------------------------------------------------------


def describe(
    store: Store,
    frozen,
    profile_id: int,
    slots: torch.Tensor | None,
    version_id: int | None,
    attention: torch.Tensor | None = None,
) -> list[SlotDescription]:
    """Everything the inspector shows, one entry per slot ([] when there is no memory yet)."""
    if slots is None:
        return []
    n = slots.shape[0]
    labels = slot_labels(frozen, slots)
    history = recent_slot_usage(store, profile_id, n)
    mean = torch.stack(history).mean(dim=0) if history else torch.zeros(n)
    config_json = None
    if version_id is not None:
        config_json = store.get_memory_version(version_id, with_tensors=False).config_json
    sources = slot_sources(store, profile_id, config_json, n)
    # A reply read by another memory shape (before a refit changed it) has no per-slot share here.
    fits = attention is not None and attention.shape[-1] == n
    reply = slot_mass(attention) if fits else None
    rows = [
        SlotDescription(
            i,
            labels[i],
            float(mean[i]),
            [float(h[i]) for h in history],
            sources[i],
            None if reply is None else float(reply[i]),
        )
        for i in range(n)
    ]
    return by_group(frozen.projector, slots, rows) if frozen.config.routed else rows


def by_group(projector, slots: torch.Tensor, rows: list[SlotDescription]) -> list[SlotDescription]:
    """A routed bank seen by group: each group's words (the first label of each token row), its
    rows' usage and reply share summed, their sources merged; an empty group says so."""
    groups, filled = [], projector.filled(slots)
    for g in range(projector.config.route_groups):
        members = [rows[r] for r in projector.token_rows(g)]
        words = [m.label.split(" · ")[0] for m in members if m.label]
        label = " · ".join(dict.fromkeys(words))
        if not filled[g]:
            label = f"(empty: no message filed here yet) {label}"
        reply = None
        if members[0].reply_usage is not None:
            reply = sum(m.reply_usage or 0.0 for m in members)
        groups.append(
            SlotDescription(
                g,
                label,
                sum(m.usage for m in members),
                [sum(values) for values in zip(*(m.usage_history for m in members))],
                list(dict.fromkeys(src for m in members for src in m.sources)),
                reply,
                kind="group",
                rows=tuple(projector.token_rows(g)),
            )
        )
    return groups


def describe_slots(runtime, attention: torch.Tensor | None = None) -> list[SlotDescription]:
    """``describe`` for a ``MemoryRuntime`` (what the TUI's memory adapter calls)."""
    slots, version_id = runtime.current()
    return describe(runtime.store, runtime.frozen, runtime.profile.id, slots, version_id, attention)


def by_group_attention(
    attention: torch.Tensor, slots: list[SlotDescription]
) -> torch.Tensor | None:
    """A reply's attention [heads, M, N] summed into one column per group [heads, M, G] when
    ``slots`` describe a routed bank's groups (``by_group``) and the reply was read by a bank of
    this shape; else None (a flat memory, or a reply read by an older memory shape)."""
    if not slots or slots[0].kind != "group":
        return None
    if attention.shape[-1] != max(max(s.rows) for s in slots) + 1:  # a bank ends on a token row
        return None
    return torch.stack([attention[..., list(s.rows)].sum(dim=-1) for s in slots], dim=-1)


def heatmap(attention: torch.Tensor, name: str = "slot") -> str:
    """A reply's attention as text: a row per soft token, a column per slot (mean over heads),
    each cell a block scaled to the largest cell; the last row is each slot's share in %.
    ``name`` heads the columns ("group" for ``by_group_attention``'s map)."""
    grid = attention.float().mean(dim=0)  # [M, N]
    mass = slot_mass(attention)
    n, top = grid.shape[1], float(grid.max()) or 1.0
    width = max(6, len(f"soft {grid.shape[0] - 1}"))  # row labels line up past soft 9
    lines = [f"{name:>{width}}  " + " ".join(f"{i:>2}" for i in range(n))]
    for m, row in enumerate(grid.tolist()):
        lines.append(f"{'soft ' + str(m):>{width}}  " + " ".join(_block(v / top) * 2 for v in row))
    lines.append(f"{'mass%':>{width}}  " + " ".join(f"{round(100 * v):>2}" for v in mass.tolist()))
    return "\n".join(lines)


def _block(fraction: float) -> str:
    """' ' (0) to '█' (the largest cell of the map)."""
    return BLOCKS[max(0, min(len(BLOCKS) - 1, round(fraction * (len(BLOCKS) - 1))))]
