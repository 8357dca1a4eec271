"""What a refit trains on: windows of the profile's learnable history, and recall examples.

At most ``max_windows`` history windows are tokenised, most from the newest conversations and
the rest a seeded sample of older ones (the sample rotates with the history, so old
conversations are revisited over successive refits); conversations the user excluded never
appear. Each user message of the chosen conversations may also become a recall example.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lpm_local.memory.perspective import told_back
from lpm_local.memory.probes import excerpt, write_probes
from lpm_local.memory.statements import collapsed, statement_text, tells_something
from lpm_local.memory.windows import Window, WindowConfig, make_windows, qa_window

if TYPE_CHECKING:
    from lpm_local.memory.frozen import FrozenMemory
    from lpm_local.memory.refit import RefitSettings
    from lpm_local.storage.store import Store

# The open questions that ask the memory what the user told it; the answer is the message told
# back ("You grew up in Tampere"), in the voice the probes use.
RECALL_PROMPTS = (
    "What do you remember about me?",
    "What do you know about me?",
    "Remind me what I told you about myself.",
)


@dataclass
class Examples:
    windows: list[Window]
    owner: dict[int, int]  # id(window) -> conversation id
    tokens: int
    # conversation id -> its turns, as read once for the windows (recall examples and the
    # salient init reuse them rather than reading the conversation again)
    turns: dict[int, list[tuple[str, str]]] = field(default_factory=dict)


def select_windows(
    store: Store, frozen: FrozenMemory, profile_id: int, settings: RefitSettings, *, salt: int = 0
) -> Examples:
    """At most ``max_windows`` windows: the newest first, then a seeded sample of older ones.

    Only conversations chosen for the budget are read and tokenised (bounded cost)."""
    convs = [c for c in store.list_conversations(profile_id) if not c.exclude_from_memory]
    convs.sort(key=lambda c: (c.updated_at, c.id), reverse=True)  # newest first
    cfg, out = settings.window, Examples([], {}, 0)
    recent = math.ceil(settings.max_windows * settings.recent_share)
    rest: list = []
    for index, conv in enumerate(convs):
        need = recent - len(out.windows)
        if need <= 0:
            rest = convs[index:]
            break
        turns = out.turns[conv.id] = _turns(store, conv.id)
        taken = _tail_windows(frozen, turns, need, cfg)
        _add(out, taken, conv.id)
    rng = random.Random(f"{settings.seed}:{salt}")
    rng.shuffle(rest)
    for conv in rest:
        need = settings.max_windows - len(out.windows)
        if need <= 0:
            break
        turns = out.turns[conv.id] = _turns(store, conv.id)
        _add(out, _sample_windows(frozen, turns, min(2, need), cfg, rng), conv.id)
    return out


def _turns(store: Store, conversation_id: int) -> list[tuple[str, str]]:
    return [
        (m.role, m.content)
        for m in store.messages(conversation_id)
        if m.role in ("user", "assistant") and m.content.strip()
    ]


def _tail_windows(frozen, turns, n: int, cfg: WindowConfig) -> list[Window]:
    """The ``n`` most recent windows, tokenising only the turns they need."""
    start = max(0, len(turns) - n * cfg.target_turns - cfg.context_turns)
    windows = make_windows(frozen.chat, turns[start:], cfg)
    if start > 0 and cfg.context_turns:
        windows = windows[1:]  # its targets were meant as the next window's context
    return windows[-n:]


def _sample_windows(frozen, turns, n: int, cfg: WindowConfig, rng: random.Random) -> list[Window]:
    """``n`` consecutive windows from a random place in an older conversation."""
    span = n * cfg.target_turns + cfg.context_turns
    start = rng.randrange(0, max(1, len(turns) - span + 1))
    windows = make_windows(frozen.chat, turns[start : start + span], cfg)
    if start > 0 and cfg.context_turns:
        windows = windows[1:]
    return windows[:n]


def _add(out: Examples, windows: list[Window], conversation_id: int) -> None:
    for w in windows:
        out.windows.append(w)
        out.owner[id(w)] = conversation_id
        out.tokens += len(w.input_ids)


def add_recall_examples(
    frozen: FrozenMemory,
    examples: Examples,
    *,
    probed_messages: int,
    filed: set[str] | None = None,
    cancel: threading.Event | None = None,
    between_batches: Callable[[], None] | None = None,
) -> int:
    """The recall half of the fit (see ``RefitSettings.recall_examples``); returns the number of
    probe examples added.

    - Probes: for the newest ``probed_messages`` user messages that may hold a fact, questions
      the backbone writes about them, each answered by the message told back to the user
      (``probes.py``). These are what make the memory answer "Where did I grow up?". A routed
      bank passes the statements of its ``filed`` messages: only those are probed (up to
      ``probed_messages`` of them), so each refit teaches every group its own message again,
      and a message that made way for a newer one (a changed taste) is not taught back.
    - One open recall example ("What do you remember about me?" -> the message told back) per
      user message that got no probe, newest first, at most as many as there are history
      windows; the question rotates over a few phrasings so the memory answers the meaning,
      not one string."""
    chat = frozen.chat
    users = [
        (conv_id, content)
        for conv_id in dict.fromkeys(examples.owner.values())
        for role, content in reversed(examples.turns[conv_id])
        if role == "user"
    ]
    budget = len(examples.windows)
    # A probe quizzes the message's statements: its questions give no fact to be asked about,
    # and the answer told back would repeat them.
    told = [(c, statement_text(m)) for c, m in users if tells_something(m)]
    if filed is not None:
        told = [(c, m) for c, m in told if collapsed(m) in filed]
    chosen = told[:probed_messages]
    probes = []
    if chosen:
        probes = write_probes(
            frozen.backbone,
            chat,
            [m for _, m in chosen],
            cancel=cancel,
            between_batches=between_batches,
        )
    owner = {m: c for c, m in chosen}
    for probe in probes:
        _add(examples, [qa_window(chat, probe.question, "", probe.answer)], owner[probe.message])
    # The open question has a different answer for every message, so it only blurs what the
    # probes teach: it covers the messages that got no probe (of a bank: its filed ones, so a
    # message that made way is not told back either).
    probed = {p.message for p in probes}
    rest = [(c, m) for c, m in users if statement_text(m) not in probed]
    if filed is not None:
        rest = [(c, m) for c, m in rest if collapsed(statement_text(m)) in filed]
    rest = rest[:budget]
    for made, (conv_id, content) in enumerate(rest):
        prompt = RECALL_PROMPTS[made % len(RECALL_PROMPTS)]
        _add(examples, [qa_window(chat, prompt, "", told_back(excerpt(content)))], conv_id)
    return len(probes)


def recent_turns(examples: Examples) -> list[tuple[str, str]]:
    """History turns for the salient-token init: the conversations already chosen."""
    turns: list[tuple[str, str]] = []
    for conv_id in dict.fromkeys(reversed(list(examples.owner.values()))):
        turns += examples.turns[conv_id]
    return turns
