"""Which stored conversation a request continues.

Chat clients are stateless towards the server: every turn resends the whole conversation. The
rule that keeps the store from filling with copies of it:

- A request's *prior* is its user/assistant messages before the new (last) user message. System
  messages take no part: they are the client's instructions, never stored.
- **Continue**: if a conversation of the request's profile holds exactly the prior as its
  user/assistant messages (same roles, same texts compared with surrounding whitespace stripped,
  same order, nothing more), the new exchange is appended to it. The most recently updated such
  conversation wins. Whitespace is stripped because lpm stores a reply stripped and clients
  differ in what they trim.
- **Start**: otherwise (an empty prior, a first turn; or a prior that matches nothing, such as a
  chat begun against another server, or one whose earlier message the user edited), a new
  conversation is created holding the prior, then the exchange. So the stored chat is what the
  user saw, and the next turn of that chat continues it. An edited or regenerated turn thus forks
  a new conversation that repeats the shared beginning; lpm's own chat does not fork.

Lookups compare a SHA-256 of the normalised dialogue, over the profile's most recently updated
``SCAN_LIMIT`` conversations with at least as many messages as the prior (a chat being
continued was updated a moment ago, so it is near the front).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from lpm_local.chat.encoding import Turn
from lpm_local.storage.records import NewMessage
from lpm_local.storage.store import Store

SCAN_LIMIT = 200


def dialogue_key(turns: Sequence[Turn]) -> str:
    """SHA-256 of the user/assistant turns, roles and stripped texts, unambiguously joined."""
    digest = hashlib.sha256()
    for turn in turns:
        if turn.role == "system":
            continue
        for part in (turn.role, turn.content.strip()):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()


def find_continued(store: Store, profile_id: int, prior: Sequence[Turn]) -> int | None:
    """The id of the conversation whose stored dialogue is exactly ``prior``, or None."""
    prior = [t for t in prior if t.role != "system"]
    if not prior:
        return None
    key = dialogue_key(prior)
    for conversation in store.list_conversations(profile_id)[:SCAN_LIMIT]:
        if conversation.message_count < len(prior):
            continue
        stored = [
            Turn(m.role, m.content)
            for m in store.messages(conversation.id)
            if m.role in ("user", "assistant")
        ]
        if len(stored) == len(prior) and dialogue_key(stored) == key:
            return conversation.id
    return None


def start_conversation(store: Store, profile_id: int, prior: Sequence[Turn]) -> int | None:
    """A new conversation holding ``prior`` (one transaction), or None for an empty prior
    (the session then creates the conversation with its first message, as in the chat)."""
    prior = [t for t in prior if t.role != "system"]
    if not prior:
        return None
    first_user = next((t.content for t in prior if t.role == "user"), prior[0].content)
    with store.transaction():
        conversation = store.create_conversation(profile_id, title_for(first_user))
        store.add_messages(conversation.id, [NewMessage(t.role, t.content) for t in prior])
    return conversation.id


def title_for(text: str, limit: int = 48) -> str:
    """A conversation title from its first message, shortened on a word (as the chat does)."""
    first = " ".join(text.split())
    if len(first) <= limit:
        return first or "New chat"
    return first[:limit].rsplit(" ", 1)[0] + "…"
