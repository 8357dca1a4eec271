"""State changes of the app, as Textual messages.

Worker threads (model loading, a streaming reply, a background refit) never touch widgets: they
post one of these messages (``post_message`` is thread-safe) and the handler on the UI thread
updates the screen. One message type per change keeps the flow easy to follow in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from lpm_local.memory.refit import RefitOutcome


@dataclass
class LoadProgress(Message):
    """The model (or its one-time conversion) made progress; ``fraction`` None is indeterminate."""

    stage: str
    fraction: float | None


@dataclass
class AssistantReady(Message):
    """The assistant is loaded; the chat screen can open."""

    assistant: Any


@dataclass
class LoadFailed(Message):
    """Loading failed with a message written for the user (an ``LpmError``) or a bug summary."""

    error: str


@dataclass
class ReplyStarted(Message):
    """The first token of a reply arrived after ``first_token_s`` seconds."""

    first_token_s: float


@dataclass
class ReplyFinished(Message):
    """A reply ended: complete, cancelled by the user, or failed with ``error``."""

    reply: str
    cancelled: bool
    conversation_id: int | None
    reply_message_id: int | None
    attention: Any = None  # torch.Tensor [heads, M, N] when memory shaped the reply
    first_token_s: float | None = None
    total_s: float = 0.0
    new_tokens: int | None = None  # from the engine's stats when it keeps them
    tokens_per_s: float | None = None  # decode speed after the first token
    error: str | None = None


@dataclass
class ConversationChosen(Message):
    """The user picked a conversation in the sidebar (None: a fresh chat)."""

    conversation_id: int | None


@dataclass
class RefitUpdate(Message):
    """A background refit moved on (posted from the refit thread through the adapter)."""

    stage: str
    fraction: float | None
    done: bool
    result: RefitOutcome | None = None
    error: str | None = None


@dataclass
class MemoryChanged(Message):
    """Memory state changed (toggle, rollback, forget, import, wipe): panels re-read the store."""

    reason: str = ""
