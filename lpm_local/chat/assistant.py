"""Everything a front end needs to talk to the assistant, opened in one call.

The CLI and the TUI both open the store, pick the active profile, load the backbone and the
profile's memory the same way; this module is that one way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lpm_local.backbones.loader import Backbone, load_backbone
from lpm_local.chat.engine import ChatEngine
from lpm_local.chat.llama_decoder import open_decoder
from lpm_local.chat.session import ChatSession, MemoryConditioner
from lpm_local.settings import Settings, load_settings
from lpm_local.storage.records import Profile
from lpm_local.storage.store import Store

if TYPE_CHECKING:  # imported when the memory is opened: it pulls in the refit machinery
    from lpm_local.memory.runtime import MemoryRuntime


@dataclass
class Assistant:
    store: Store
    backbone: Backbone
    engine: ChatEngine
    profile: Profile
    memory: MemoryRuntime | None = None
    # The user's settings as they were when the assistant opened (system prompt, sampling).
    settings: Settings = field(default_factory=Settings)

    @property
    def notice(self) -> str | None:
        """One line a front end shows when the assistant opens, or None: today, that no trained
        projector ships for this backbone, so the memory runs as a routed slot bank."""
        return memory_notice(self.memory)

    def new_session(
        self,
        *,
        temporary: bool = False,
        conversation_id: int | None = None,
        system_prompt: str | None = None,
    ) -> ChatSession:
        """A chat (new, or continuing ``conversation_id``) with the configured system prompt,
        or ``system_prompt`` for this one session (`lpm ask --system`)."""
        return ChatSession(
            engine=self.engine,
            store=self.store,
            profile=self.profile,
            conversation_id=conversation_id,
            # The runtime reads the on/off switch on every turn, so `lpm memory off` in another
            # terminal takes effect at the next message.
            memory=self.memory,
            temporary=temporary,
            system_prompt=self.settings.system_prompt if system_prompt is None else system_prompt,
        )

    def reply_options(self, max_new_tokens: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``ChatSession.send``: the configured reply length and sampling;
        ``max_new_tokens`` (a command's `--max-new-tokens`) wins over the setting."""
        return {
            "max_new_tokens": max_new_tokens or self.settings.max_reply_tokens,
            "temperature": self.settings.temperature,
            "top_p": self.settings.top_p,
        }

    def use_profile(self, name: str) -> Profile:
        """Make profile ``name`` active, keeping the loaded model; memory is per profile, so
        the old runtime is closed (joining its refit) and the new profile's is opened."""
        from lpm_local.memory.runtime import MemoryRuntime

        profile = self.store.set_active_profile(name)
        if self.memory is not None:
            self.memory.close()
        self.memory = None  # if opening the new runtime fails, chat on without memory
        self.profile = profile
        self.memory = MemoryRuntime(
            self.store, self.backbone, profile, refit_every=self.settings.refit_every
        )
        return profile

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()
        self.store.close()

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_assistant(
    model: str | None = None,
    *,
    quantize: str | None = None,
    progress: Callable[[str, float | None], None] | None = None,
    background_refits: bool = True,
    settings: Settings | None = None,
) -> Assistant:
    """Open the store, the backbone and the profile's memory.

    The settings are read first (default ``load_settings()``), so a broken settings file fails
    before anything opens; ``model=None`` takes the configured default model, and the memory
    refits every ``refit_every`` user turns as configured. The store opens next, so a locked or
    corrupt database fails before the slow model load. ``background_refits=False`` is for
    one-shot commands (`lpm ask`): a process that exits after one answer should not start a
    refit only to cancel it.
    """
    from lpm_local.memory.runtime import MemoryRuntime

    settings = settings if settings is not None else load_settings()
    store = Store.open()
    try:
        profile = store.active_profile()
        backbone = load_backbone(
            model or settings.model or None, quantize=quantize, progress=progress
        )
        # llama.cpp replies where the [fast] extra can serve this backbone; else transformers.
        engine = ChatEngine(backbone, decoder=open_decoder(backbone, progress=progress))
        memory = MemoryRuntime(
            store,
            backbone,
            profile,
            refit_every=settings.refit_every,
            background=background_refits,
        )
    except BaseException:
        store.close()
        raise
    return Assistant(
        store=store,
        backbone=backbone,
        engine=engine,
        profile=profile,
        memory=memory,
        settings=settings,
    )


def memory_notice(memory: MemoryConditioner | None) -> str | None:
    """The line saying the memory runs without a trained projector, if it does.

    Without one, the memory still works (a routed bank: each turn reads the groups of soft
    tokens filed under the messages nearest to it), but it is not the trained design, and the
    user should hear that once rather than find out from weaker recall.
    """
    frozen = getattr(memory, "frozen", None)
    if frozen is None or frozen.shipped:
        return None
    return (
        f"memory on {frozen.backbone.name}: no trained projector ships for it yet, so it runs "
        "as a routed slot bank (soft tokens filed per message, read by nearness)"
    )
