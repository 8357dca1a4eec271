"""Test data builders: generated chat exports and memory versions.

``write_chatgpt_export`` writes a ChatGPT-shaped ``conversations.json`` incrementally (a 200 MB
export never sits in memory), deterministic for a seed (same bytes, same sha256).
``add_memory`` stores a real slots blob (``memory.slots.slots_to_bytes``) as a memory version.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_WORDS = (
    "memory slot lisbon garden python recipe train budget music river cat winter "
    "project deadline coffee bicycle chess poem doctor holiday camera tomato"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def chatgpt_conversation(
    index: int, n_messages: int, rng: random.Random, words: int = 20, marker: str | None = None
) -> dict:
    """One conversation in the ChatGPT export shape: a node chain root -> messages."""
    conv_id = f"conv-{index:08d}"
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for k in range(n_messages):
        node = f"{conv_id}-n{k}"
        role = "user" if k % 2 == 0 else "assistant"
        content = _text(rng, words)
        if marker is not None and k == 0:
            content = f"{content} {marker}"
        mapping[node] = {
            "id": node,
            "parent": parent,
            "children": [],
            "message": {
                "id": node,
                "author": {"role": role, "name": None, "metadata": {}},
                "create_time": 1_700_000_000 + index * 60 + k,
                "update_time": None,
                "content": {"content_type": "text", "parts": [content]},
                "status": "finished_successfully",
                "end_turn": True,
                "weight": 1.0,
                "metadata": {},
                "recipient": "all",
                "channel": None,
            },
        }
        mapping[parent]["children"].append(node)
        parent = node
    return {
        "title": f"Conversation {index}",
        "create_time": 1_700_000_000 + index * 60,
        "update_time": 1_700_000_000 + index * 60 + n_messages,
        "mapping": mapping,
        "current_node": parent,
        "conversation_id": conv_id,
        "id": conv_id,
    }


def write_chatgpt_export(
    path: Path,
    n_conversations: int,
    messages_per_conversation: int,
    *,
    words: int = 20,
    seed: int = 0,
    marker: str | None = None,
) -> Path:
    """Write ``conversations.json`` with ``n_conversations`` x ``messages_per_conversation``
    messages; ``marker`` (if given) is appended to the first message of the first one."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i in range(n_conversations):
            if i:
                fh.write(",\n")
            conversation = chatgpt_conversation(
                i, messages_per_conversation, rng, words, marker if i == 0 else None
            )
            fh.write(json.dumps(conversation, indent=1))
        fh.write("]\n")
    return path


def slots_config(n_slots: int = 4, dim: int = 16):
    from lpm_local.memory.config import MemoryConfig

    return MemoryConfig(
        hidden_size=dim, n_slots=n_slots, slot_dim=dim, n_soft_tokens=n_slots, heads=1, head_dim=8
    )


def add_memory(
    store,
    profile_id: int,
    *,
    n_slots: int = 4,
    dim: int = 16,
    seed: int = 0,
    dtype=None,
    slots=None,
    **kwargs,
):
    """Store random (or given) slots as a new current memory version; returns the version."""
    import torch

    from lpm_local.memory.slots import slots_to_bytes

    config = slots_config(n_slots, dim)
    if slots is None:
        gen = torch.Generator().manual_seed(seed)
        slots = torch.randn(n_slots, dim, generator=gen).to(dtype or torch.float32)
    blob = slots_to_bytes(slots, config)
    kwargs.setdefault("backbone", "smollm2-135m")
    kwargs.setdefault("projector_sha256", "ab" * 32)
    kwargs.setdefault("config_json", config.to_json())
    return store.add_memory_version(profile_id, tensors=blob, **kwargs)


def finite_marker_bytes(rng: random.Random, n: int = 32) -> bytes:
    """``n`` random bytes that are also finite float32s (so they can sit inside real slots):
    the top exponent bit of each little-endian float is cleared."""
    data = bytearray(rng.getrandbits(8) for _ in range(n))
    for i in range(3, n, 4):
        data[i] &= 0xBF
    return bytes(data)
