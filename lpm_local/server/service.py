"""One chat-completion request end to end, on the generation thread.

``ChatService`` holds what the server shares between requests: the store, the engine, the frozen
memory network and one ``MemoryRuntime`` per profile that has been asked for (each with its own
background refits, which pause while a reply is generated and never hold a request up). A
request runs through the same ``ChatSession`` as ``lpm chat``: its user message is stored, the
profile's memory conditions the reply, the reply is stored and the memory told a turn happened.
A temporary request (``X-LPM-Temporary``) is a temporary session: nothing stored, nothing
learned, no memory.

The client's own ``system`` message becomes the system prompt of that one request. It comes
from the user's own front-end (a persona they chose), not from imported text, so it may instruct;
it is still encoded as data (no control tokens) and it is never stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from lpm_local.chat.engine import ChatEngine
from lpm_local.chat.session import ChatSession
from lpm_local.errors import NotFound
from lpm_local.server.conversations import find_continued, start_conversation
from lpm_local.server.errors import ApiError
from lpm_local.server.schemas import ChatRequest
from lpm_local.storage.records import Profile
from lpm_local.storage.store import Store


@dataclass
class Outcome:
    """What one request produced."""

    text: str
    finish_reason: str  # "stop" (end of reply or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    cancelled: bool
    conversation_id: int | None
    memory_used: bool  # a soft prompt from the profile's memory shaped this reply


@dataclass(frozen=True)
class Started:
    """Sent before the first chunk: what is known once the reply starts."""

    conversation_id: int | None
    memory_used: bool
    profile: str


class ChatService:
    """The server's assistant: shared model, per-profile memory, one request at a time."""

    def __init__(
        self,
        store: Store,
        engine: ChatEngine,
        default_profile: Profile,
        *,
        background_refits: bool = True,
        runtime_factory: Callable[[Profile], object] | None = None,
        system_prompt: str | None = None,
    ):
        """``runtime_factory(profile)`` builds a profile's memory (tests pass a faster one);
        by default a ``MemoryRuntime`` sharing one frozen memory network. ``system_prompt``:
        for requests that bring none (None: ``ChatSession``'s default, the app's prompt)."""
        self.store, self.engine = store, engine
        self.system_prompt = system_prompt
        self.default_profile = default_profile
        self.background_refits = background_refits
        self._factory = runtime_factory or self._memory_runtime
        self._frozen = None
        self._runtimes: dict[int, object] = {}
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.engine.backbone.name

    def resolve_profile(self, name: str | None) -> Profile:
        """The named profile, or the server's; unknown names are a 404 (never created: a
        typo must not start a new memory)."""
        if not name:
            return self.store.get_profile_by_id(self.default_profile.id)
        try:
            return self.store.get_profile(name)
        except NotFound:
            raise ApiError(
                404,
                f"profile {name[:64]!r} does not exist; create it with `lpm profile create`",
                param="user",
                code="profile_not_found",
            ) from None

    def memory_for(self, profile: Profile):
        """The profile's memory runtime, opened on first use and kept for the server's life."""
        with self._lock:
            runtime = self._runtimes.get(profile.id)
            if runtime is None:
                runtime = self._runtimes[profile.id] = self._factory(profile)
            return runtime

    def complete(
        self,
        request: ChatRequest,
        profile: Profile,
        *,
        temporary: bool,
        cancel: threading.Event,
        on_start: Callable[[Started], None],
        on_chunk: Callable[[str], None],
    ) -> Outcome:
        """Generate the reply to ``request`` (blocking; run it on the generation thread)."""
        session = self._session(request, profile, temporary)
        options: dict = {"max_new_tokens": request.max_tokens, "stop": request.stop}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        started = False
        for chunk in session.send(request.message, cancel=cancel, **options):
            if not started:
                started = True
                on_start(self._started(session, profile))
            on_chunk(chunk)
        if not started:
            on_start(self._started(session, profile))
        result, stats = session.last, self.engine.last_stats
        new_tokens = stats.new_tokens if stats else 0
        length = new_tokens >= request.max_tokens and not result.stopped
        return Outcome(
            text=result.reply.strip(),  # as stored
            finish_reason="length" if length else "stop",
            prompt_tokens=stats.prompt_tokens if stats else 0,
            completion_tokens=new_tokens,
            cancelled=result.cancelled,
            conversation_id=session.conversation_id,
            memory_used=bool(stats and stats.prefix_tokens),
        )

    def _session(self, request: ChatRequest, profile: Profile, temporary: bool) -> ChatSession:
        prompt = request.system or self.system_prompt
        system = {"system_prompt": prompt} if prompt else {}
        if temporary:
            session = ChatSession(engine=self.engine, temporary=True, **system)
            session.turns = list(request.prior)  # the client's conversation is the context
            return session
        conversation_id = find_continued(self.store, profile.id, request.prior)
        if conversation_id is None:
            conversation_id = start_conversation(self.store, profile.id, request.prior)
        # The session reads the conversation back from the store: by the rule above that is
        # exactly the request's prior, so the window the model sees is the request's messages.
        return ChatSession(
            engine=self.engine,
            store=self.store,
            profile=profile,
            conversation_id=conversation_id,
            memory=self.memory_for(profile),
            **system,
        )

    def _started(self, session: ChatSession, profile: Profile) -> Started:
        stats = self.engine.last_stats
        return Started(
            conversation_id=session.conversation_id,
            memory_used=bool(stats and stats.prefix_tokens),
            profile=profile.name,
        )

    def _memory_runtime(self, profile: Profile):
        from lpm_local.memory.frozen import load_frozen_memory
        from lpm_local.memory.runtime import MemoryRuntime

        if self._frozen is None:
            self._frozen = load_frozen_memory(self.engine.backbone)
        return MemoryRuntime(
            self.store,
            self.engine.backbone,
            profile,
            frozen=self._frozen,
            background=self.background_refits,
        )

    def close(self) -> None:
        """Close every profile's memory (cancelling and joining a running refit)."""
        with self._lock:
            runtimes, self._runtimes = list(self._runtimes.values()), {}
        for runtime in runtimes:
            close = getattr(runtime, "close", None)
            if close is not None:
                close()
