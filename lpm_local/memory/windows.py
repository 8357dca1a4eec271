"""Chat history -> tokenised training examples for slot fitting and projector training.

A ``Window`` is a short preceding context (no loss) followed by the next turns (the targets,
LM loss on their content and end-of-turn token). Every window is encoded by the chat's own
``ChatFormat`` (the app's system turn, the backbone's chat template, contents as data), so the
slots are fitted in exactly the format the chat reads them in, and ``<|im_start|>`` typed by a
user stays text, never a turn boundary.

The soft prefix is conditioned on ``query_ids``: the content of the last user message *before*
the targets (what the app would have in hand when computing the prefix), never on a target.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from lpm_local.chat.encoding import IGNORE_INDEX, ChatFormat, Turn

IGNORE = IGNORE_INDEX
ROLE_IDS = {"user": 0, "assistant": 1, "system": 2}
# A history turn as callers hold it: a ``Turn`` or a (role, content) pair.
TurnLike = Turn | tuple[str, str]


@dataclass(frozen=True)
class Window:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE where not a target
    query_ids: tuple[int, ...] = ()  # content of the user message the prefix is computed for
    # Content of the window's first user target: what a routed memory (``routing.py``) files a
    # window under when no user message precedes its targets.
    topic_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError("input_ids and labels differ in length")

    @property
    def route_ids(self) -> tuple[int, ...]:
        """The message a routed memory chooses its groups by: the query, else the topic."""
        return self.query_ids or self.topic_ids

    @property
    def n_targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass(frozen=True)
class WindowConfig:
    # Two preceding turns give the targets their immediate context (the user turn an answer
    # replies to) while keeping windows short: cost grows with every token on a CPU.
    context_turns: int = 2
    # One exchange (user + assistant) per window: the unit a chat adds.
    target_turns: int = 2
    # 64-160 tokens per window keeps a forward+backward around a second on two CPU cores.
    max_tokens: int = 160
    # Which roles' contents carry loss: both, so the memory learns what the user says and how
    # the assistant answered them.
    label_roles: tuple[str, ...] = ("user", "assistant")

    def __post_init__(self) -> None:
        if self.context_turns < 0 or self.target_turns < 1:
            raise ValueError(
                f"context_turns >= 0 and target_turns >= 1 required, got "
                f"{self.context_turns}, {self.target_turns}"
            )
        if self.max_tokens < 16:
            raise ValueError(f"max_tokens must be >= 16, got {self.max_tokens}")
        bad = set(self.label_roles) - set(ROLE_IDS)
        if bad:
            raise ValueError(f"unknown label roles {sorted(bad)}")


def make_windows(
    chat_or_tokenizer, turns: Sequence[TurnLike], config: WindowConfig | None = None
) -> list[Window]:
    """Every ``target_turns`` turns of the history become the targets of one window."""
    config = config or WindowConfig()
    chat = chat_format(chat_or_tokenizer)
    turns = [
        t for t in map(as_turn, turns) if t.role in ("user", "assistant") and t.content.strip()
    ]
    windows = []
    for start in range(0, len(turns), config.target_turns):
        ctx = turns[max(0, start - config.context_turns) : start]
        targets = turns[start : start + config.target_turns]
        windows.append(_window(chat, ctx, targets, config))
    return [w for w in windows if w.n_targets > 0]


def _window(chat: ChatFormat, ctx: list[Turn], targets: list[Turn], config: WindowConfig) -> Window:
    flags = [t.role in config.label_roles for t in targets]
    while True:  # drop the oldest context first until the window fits
        ids, labels = chat.labelled_ids(ctx + targets, [False] * len(ctx) + flags)
        if len(ids) <= config.max_tokens or not ctx:
            break
        ctx = ctx[1:]
    users = [t.content for t in ctx if t.role == "user"]
    query = tuple(chat.text_ids(users[-1])) if users else ()
    asked = [t.content for t in targets if t.role == "user"]
    topic = tuple(chat.text_ids(asked[0])) if asked else ()
    return Window(tuple(ids[: config.max_tokens]), tuple(labels[: config.max_tokens]), query, topic)


def qa_window(
    chat_or_tokenizer,
    prompt: str,
    answer_prefix: str,
    answer: str,
    *,
    context: Sequence[TurnLike] = (),
    label_prefix: bool = False,
) -> Window:
    """A question turn then the assistant's reply ``answer_prefix + answer``, encoded exactly as
    the chat would prompt for that reply (``ChatFormat.prompt_ids``) and continued by the answer.

    Labels cover ``answer`` (plus the prefix when ``label_prefix``): scoring an option uses the
    option tokens only, so all four options are compared on their own words. ``context`` puts
    history in the prompt (the full-context baseline)."""
    chat = chat_format(chat_or_tokenizer)
    ids = chat.prompt_ids([*map(as_turn, context), Turn("user", prompt)])
    labels = [IGNORE] * len(ids)
    prefix = chat.text_ids(answer_prefix.rstrip()) if answer_prefix.strip() else []
    body = chat.text_ids((" " if prefix else "") + answer)
    ids += prefix + body
    labels += (prefix if label_prefix else [IGNORE] * len(prefix)) + body
    return Window(tuple(ids), tuple(labels), tuple(chat.text_ids(prompt)))


def history_tokens(
    chat_or_tokenizer, turns: Sequence[TurnLike], max_tokens: int
) -> tuple[list[int], list[int]]:
    """Content token ids of the history with a role id per token (the most recent ``max_tokens``):
    what the salient-token slot initialisation reads."""
    chat = chat_format(chat_or_tokenizer)
    ids, roles = [], []
    for turn in map(as_turn, turns):
        if turn.role not in ("user", "assistant"):
            continue
        t = chat.text_ids(turn.content)
        ids += t
        roles += [ROLE_IDS[turn.role]] * len(t)
    return ids[-max_tokens:], roles[-max_tokens:]


def split_heldout(
    windows: Sequence[Window], fraction: float = 0.2, *, seed: int = 0, min_train: int = 1
) -> tuple[list[Window], list[Window]]:
    """Hold out a seeded ``fraction`` of windows (at least one when there are >= 2 windows and
    at least ``min_train`` stay for training); returns (train, heldout)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(windows)
    k = min(max(1 if n >= 2 and fraction > 0 else 0, round(n * fraction)), max(0, n - min_train))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    return [w for i, w in enumerate(windows) if i not in held], [
        w for i, w in enumerate(windows) if i in held
    ]


def as_turn(turn: TurnLike) -> Turn:
    return turn if isinstance(turn, Turn) else Turn(*turn)


def chat_format(chat_or_tokenizer) -> ChatFormat:
    """A ``ChatFormat`` as given, or the app's default one for a bare tokenizer."""
    if isinstance(chat_or_tokenizer, ChatFormat):
        return chat_or_tokenizer
    return ChatFormat(chat_or_tokenizer)
