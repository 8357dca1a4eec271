"""One chat turn, end to end.

``ChatSession`` ties the pieces together: it stores the user's message, asks the memory for a
soft prompt conditioned on that message, streams the reply from the engine over a recent window
of the conversation, stores the reply, and tells the memory that a turn happened (so a refit can
be scheduled). A temporary session does the same with nothing stored and no memory at all.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lpm_local.chat.encoding import DEFAULT_SYSTEM_PROMPT, ChatFormat, Turn, recent_window
from lpm_local.chat.stops import StopScanner
from lpm_local.storage.chats import title_from

if TYPE_CHECKING:
    import torch

    from lpm_local.chat.engine import ChatEngine
    from lpm_local.storage.records import Profile
    from lpm_local.storage.store import Store

# Tokens of recent conversation kept in context. The long-term memory is the soft prompt, not
# this window: a short window is what makes the KV cache small (DESIGN.md §3).
DEFAULT_WINDOW_TOKENS = 1024


class MemoryConditioner(Protocol):
    """What a chat turn needs from the memory (implemented by ``lpm_local.memory.runtime``)."""

    def prefix(self, user_text: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Soft prompt ``[M, hidden]`` and attention ``[heads, M, N]`` for this message, or None."""

    def after_turn(self, profile_id: int, *, reply_message_id: int | None = None) -> None:
        """Called once a turn is stored; records what the reply attended to and may schedule
        a background refit."""


@dataclass
class TurnResult:
    """What one ``send`` produced, filled in while streaming."""

    reply: str = ""
    cancelled: bool = False
    stopped: bool = False  # a stop string ended the reply
    attention: torch.Tensor | None = None  # [heads, M, N] when memory shaped the reply
    user_message_id: int | None = None
    reply_message_id: int | None = None


@dataclass
class ChatSession:
    """A conversation with the assistant; ``temporary`` sessions leave no trace."""

    engine: ChatEngine
    store: Store | None = None
    profile: Profile | None = None
    conversation_id: int | None = None
    memory: MemoryConditioner | None = None
    temporary: bool = False
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    window_tokens: int = DEFAULT_WINDOW_TOKENS
    turns: list[Turn] = field(default_factory=list)
    last: TurnResult | None = None

    def __post_init__(self) -> None:
        if not self.temporary and (self.store is None or self.profile is None):
            raise ValueError("a stored session needs a store and a profile; use temporary=True")
        if self.temporary:
            # Temporary means neither stored nor learned, and not shaped by memory either:
            # the user asked for a clean room.
            self.memory = None
        elif self.conversation_id is not None:
            # Stored system turns (imported logs carry them) are kept as data in the store and
            # shown, but never sent: the system prompt is the app's own, from the settings.
            self.turns = [
                Turn(m.role, m.content)
                for m in self.store.messages(self.conversation_id)
                if m.role != "system"
            ]

    def send(
        self,
        text: str,
        *,
        cancel: threading.Event | None = None,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
    ) -> Iterator[str]:
        """Stream the reply to ``text`` chunk by chunk; the result lands in ``self.last``.

        ``stop``: strings that end the reply; the reply shown and stored is the text before
        the first of them (``self.last.stopped`` says one was reached)."""
        result = TurnResult()
        self.last = result
        if not self.temporary:
            result.user_message_id = self._store_message("user", text)
        self.turns.append(Turn("user", text))
        prefix = None
        if self.memory is not None:
            conditioned = self.memory.prefix(text)
            if conditioned is not None:
                prefix, result.attention = conditioned
        chat = ChatFormat(self.engine.backbone.tokenizer, self.system_prompt or None)
        window = recent_window(
            chat.tokenizer, self.turns, self.window_tokens, system=chat.system_prompt
        )
        scanner = StopScanner(stop)
        chunks = self.engine.stream(
            chat.conversation(window),
            prefix=prefix,
            cancel=cancel,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
        )
        # closing(): leaving the loop at a stop string stops generation now, not at GC.
        with contextlib.closing(chunks):
            for chunk in chunks:
                shown, result.stopped = scanner.feed(chunk)
                if shown:
                    result.reply += shown
                    yield shown
                if result.stopped:
                    break
        tail = scanner.flush()
        result.stopped = scanner.stopped  # the stream may end inside a held-back stop string
        if tail:
            result.reply += tail
            yield tail
        result.cancelled = bool(cancel is not None and cancel.is_set())
        self._finish(result)

    def _finish(self, result: TurnResult) -> None:
        reply = result.reply.strip()
        if reply:
            # A cancelled reply is kept as far as it got: the user saw it, the context has it.
            self.turns.append(Turn("assistant", reply))
            if not self.temporary:
                result.reply_message_id = self._store_message("assistant", reply)
        if not self.temporary and self.memory is not None:
            self.memory.after_turn(self.profile.id, reply_message_id=result.reply_message_id)

    def _store_message(self, role: str, content: str) -> int:
        if self.conversation_id is None:
            title = title_from(content) or "New chat"  # a message of no words
            self.conversation_id = self.store.create_conversation(self.profile.id, title).id
        return self.store.add_message(self.conversation_id, role, content).id
