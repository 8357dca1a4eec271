"""Chat history -> tokenised training examples for slot fitting and projector training.

A ``Window`` is a short preceding context (no loss) followed by the next turns (the targets,
LM loss on their content and end-of-turn token). Role markers are inserted as token ids and
message contents are tokenised with special tokens split, so ``<|im_start|>`` typed by a user is
text, never a turn boundary (DESIGN.md §5, R13).

The soft prefix is conditioned on ``query_ids``: the content of the last user message *before*
the targets (what the app would have in hand when computing the prefix), never on a target.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

IGNORE = -100
ROLE_IDS = {"user": 0, "assistant": 1, "system": 2}


@dataclass(frozen=True)
class Window:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE where not a target
    query_ids: tuple[int, ...] = ()  # content of the user message the prefix is computed for

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError("input_ids and labels differ in length")

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
    # None: no system turn. A fixed system prompt is also prepended at chat time if set here.
    system_prompt: str | None = None
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


class ChatTokens:
    """Safe ChatML encoding with a given tokenizer (role markers as ids, contents as text)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if self.im_start is None or self.im_end is None or self.im_start == tokenizer.unk_token_id:
            raise ValueError("tokenizer has no ChatML markers <|im_start|>/<|im_end|>")
        self._newline = self.text("\n")
        self._headers = {role: [self.im_start] + self.text(f"{role}\n") for role in ROLE_IDS}

    def text(self, content: str) -> list[int]:
        """Token ids of untrusted text: special tokens split, no BOS/EOS added."""
        return list(
            self.tokenizer(content, add_special_tokens=False, split_special_tokens=True).input_ids
        )

    def turn(self, role: str, content: str, *, label: bool) -> tuple[list[int], list[int]]:
        """One ChatML turn: (ids, labels); labels cover content + <|im_end|> when ``label``."""
        if role not in self._headers:
            raise ValueError(f"unknown role {role!r}")
        head, body, tail = self._headers[role], self.text(content), [self.im_end] + self._newline
        ids = head + body + tail
        if not label:
            return ids, [IGNORE] * len(ids)
        return ids, [IGNORE] * len(head) + body + [self.im_end] + [IGNORE] * len(self._newline)

    def assistant_header(self) -> list[int]:
        return list(self._headers["assistant"])


def make_windows(
    tokenizer_or_chat, turns: Sequence[tuple[str, str]], config: WindowConfig | None = None
) -> list[Window]:
    """Every ``target_turns`` turns of the history become the targets of one window."""
    config = config or WindowConfig()
    chat = _chat(tokenizer_or_chat)
    turns = [(r, c) for r, c in turns if r in ("user", "assistant") and c.strip()]
    windows = []
    for start in range(0, len(turns), config.target_turns):
        ctx = turns[max(0, start - config.context_turns) : start]
        targets = turns[start : start + config.target_turns]
        windows.append(_window(chat, ctx, targets, config))
    return [w for w in windows if w.n_targets > 0]


def _window(chat: ChatTokens, ctx, targets, config: WindowConfig) -> Window:
    head_ids: list[int] = []
    if config.system_prompt:
        head_ids = chat.turn("system", config.system_prompt, label=False)[0]
    ctx_parts = [chat.turn(r, c, label=False)[0] for r, c in ctx]
    tgt_ids, tgt_labels = [], []
    for role, content in targets:
        ids, labels = chat.turn(role, content, label=role in config.label_roles)
        tgt_ids += ids
        tgt_labels += labels
    budget = config.max_tokens - len(head_ids) - len(tgt_ids)
    while ctx_parts and sum(map(len, ctx_parts)) > budget:  # drop the oldest context first
        ctx_parts.pop(0)
        ctx = ctx[1:]
    ctx_ids = [i for part in ctx_parts for i in part]
    ids = (head_ids + ctx_ids + tgt_ids)[: config.max_tokens]
    labels = ([IGNORE] * (len(head_ids) + len(ctx_ids)) + tgt_labels)[: config.max_tokens]
    users = [c for r, c in ctx if r == "user"]
    return Window(tuple(ids), tuple(labels), tuple(chat.text(users[-1])) if users else ())


def qa_window(
    tokenizer_or_chat,
    prompt: str,
    answer_prefix: str,
    answer: str,
    *,
    context: Sequence[tuple[str, str]] = (),
    system_prompt: str | None = None,
    label_prefix: bool = False,
) -> Window:
    """A question turn then the assistant's reply ``answer_prefix + answer``.

    Labels cover ``answer`` (plus the prefix when ``label_prefix``): scoring an option uses the
    option tokens only, so all four options are compared on their own words. ``context`` puts
    history in the prompt (the full-context baseline)."""
    chat = _chat(tokenizer_or_chat)
    ids: list[int] = []
    if system_prompt:
        ids += chat.turn("system", system_prompt, label=False)[0]
    for role, content in context:
        ids += chat.turn(role, content, label=False)[0]
    ids += chat.turn("user", prompt, label=False)[0]
    ids += chat.assistant_header()
    labels = [IGNORE] * len(ids)
    prefix = chat.text(answer_prefix.rstrip()) if answer_prefix.strip() else []
    body = chat.text((" " if prefix else "") + answer)
    ids += prefix + body
    labels += (prefix if label_prefix else [IGNORE] * len(prefix)) + body
    return Window(tuple(ids), tuple(labels), tuple(chat.text(prompt)))


def history_tokens(
    tokenizer_or_chat, turns: Sequence[tuple[str, str]], max_tokens: int
) -> tuple[list[int], list[int]]:
    """Content token ids of the history with a role id per token (the most recent ``max_tokens``):
    what the salient-token slot initialisation reads."""
    chat = _chat(tokenizer_or_chat)
    ids, roles = [], []
    for role, content in turns:
        if role not in ("user", "assistant"):
            continue
        t = chat.text(content)
        ids += t
        roles += [ROLE_IDS[role]] * len(t)
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


def _chat(tokenizer_or_chat) -> ChatTokens:
    return (
        tokenizer_or_chat
        if isinstance(tokenizer_or_chat, ChatTokens)
        else ChatTokens(tokenizer_or_chat)
    )
