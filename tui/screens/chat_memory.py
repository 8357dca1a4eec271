"""The chat screen's memory and data actions: on/off, refit, roll back, forget, inspect,
import, export, wipe. A mixin so ``chat.py`` stays about chatting; it expects the screen's
``assistant``, ``adapter``, ``session``, ``temporary`` and ``refresh_chrome``.

A refit runs in the runtime's own thread; its events arrive through the adapter's listener as
``RefitUpdate`` messages (``post_message`` is thread-safe), so the panel's progress bar moves
while the user keeps chatting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual import on

from lpm_local import locations
from lpm_local.errors import NotFound
from tui.data_ops import WIPE_SCOPES, DataOps
from tui.formatting import loss
from tui.memory_adapter import AssistantParts, MemoryAdapter
from tui.messages import MemoryChanged, RefitUpdate
from tui.screens.dialogs import ChoiceDialog, ConfirmDialog, TextPrompt
from tui.screens.import_preview import ImportScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.memory_flows import (
    ask_forget,
    ask_rollback,
    require_runtime,
    run_action,
)
from tui.widgets.memory_panel import MemoryPanel
from tui.widgets.message_list import AssistantMessage, MessageList

if TYPE_CHECKING:
    from lpm_local.chat.session import ChatSession
    from lpm_local.memory.refit import RefitOutcome
    from lpm_local.memory.runtime import RefitEvent


def refit_message(outcome: RefitOutcome | None, stage: str = "") -> str:
    """One line on what a refit did, for the toast (``outcome`` None: it ended without one)."""
    if outcome is None:
        return f"Memory refit: {(stage or 'finished').replace('_', ' ')}."
    before, after = outcome.heldout_before, outcome.heldout_after
    change = f", held-out loss {loss(before)} -> {loss(after)}" if after is not None else ""
    if outcome.new_version_id is not None:
        return f"Memory refit: new version #{outcome.new_version_id}{change}."
    detail = f" ({outcome.detail})." if outcome.detail else "."
    return f"Memory refit: {outcome.status.replace('_', ' ')}{change}{detail}"


class MemoryActions:
    """Mixed into ``ChatScreen``."""

    assistant: AssistantParts
    adapter: MemoryAdapter
    session: ChatSession
    temporary: bool

    # -- memory ----------------------------------------------------------------------------------

    def _on_refit_event(self, event: RefitEvent) -> None:
        """Called from the refit thread: hand over to the UI thread as a message."""
        self.post_message(
            RefitUpdate(event.stage, event.fraction, event.done, event.result, event.error)
        )

    def on_refit_update(self, event: RefitUpdate) -> None:
        panel = self.query_one(MemoryPanel)
        if not event.done:
            panel.show_refit(event.stage, event.fraction, running=True)
            return
        panel.show_refit("", None, running=False)
        self.refresh_chrome()
        if event.error:
            self.notify(f"Memory refit failed: {event.error}", severity="error", markup=False)
            return
        self.notify(refit_message(event.result, event.stage), markup=False)

    @on(MemoryPanel.Toggled)
    def _panel_toggled(self, event: MemoryPanel.Toggled) -> None:
        self._set_memory(event.enabled)

    def action_toggle_memory(self) -> None:
        self._set_memory(not self.adapter.status().enabled)

    def _set_memory(self, enabled: bool) -> None:
        self.adapter.set_enabled(enabled)
        # The open chat follows the switch now, not only the next one.
        if not self.temporary:
            self.session.memory = self.assistant.memory if enabled else None
        self.refresh_chrome()
        self.notify(
            "Memory on: replies are shaped by memory, chats are learned."
            if enabled
            else "Memory off: no soft prompt, nothing learned.",
            markup=False,
        )

    def action_refit_now(self) -> None:
        if require_runtime(self.app, self.adapter, "refit"):
            run_action(
                self.app,
                self,
                self.adapter.refit_now,
                "Refit started in the background; keep chatting.",
                name="refit",
            )

    def action_rollback(self) -> None:
        ask_rollback(self.app, self, self.adapter)

    def action_forget_chat(self) -> None:
        if self.session.conversation_id is None or self.temporary:
            self.notify("Open a stored chat first: this one is not in memory.", markup=False)
            return
        conversation = self.assistant.store.get_conversation(self.session.conversation_id)
        ask_forget(self.app, self, self.adapter, conversation)

    def action_inspect(self) -> None:
        reply = self._selected_reply()
        conversation = None
        if self.session.conversation_id is not None and not self.temporary:
            conversation = self.assistant.store.get_conversation(self.session.conversation_id)
        attention = None
        if reply is not None:
            # This session's replies carry it; earlier ones have it in the store.
            attention = reply.attention
            if attention is None:
                attention = self.adapter.reply_attention(reply.message_id)
        self.app.push_screen(
            InspectorScreen(
                self.adapter,
                reply=reply.text if reply else "",
                attention=attention,
                conversation=conversation,
            )
        )

    def _selected_reply(self) -> AssistantMessage | None:
        focused = self.app.focused
        if isinstance(focused, AssistantMessage):
            return focused
        replies = self.query_one(MessageList).replies()
        return replies[-1] if replies else None

    async def on_memory_changed(self, event: MemoryChanged) -> None:
        store = self.assistant.store
        try:
            store.get_profile_by_id(self.assistant.profile.id)
        except NotFound:  # a wipe took the profile: continue as the (re-created) active one
            self.assistant.profile = store.active_profile()
            if self.adapter.available:
                self.app.load_assistant(self.app.model)  # the runtime belonged to the old one
                return
        conversation_id = self.session.conversation_id
        if conversation_id is not None and not self.temporary:
            stored = {
                c.id for c in self.assistant.store.list_conversations(self.assistant.profile.id)
            }
            if conversation_id not in stored:  # forgotten or wiped under us
                await self.open_conversation(None)
                return
        self.refresh_chrome()

    # -- import, export, wipe ---------------------------------------------------------------------

    def action_import_file(self) -> None:
        def imported(lines: list[str] | None) -> None:
            if lines is not None:
                self.notify("Imported: " + "; ".join(lines), markup=False)
                self.post_message(MemoryChanged("import"))

        self.app.push_screen(ImportScreen(DataOps(self.assistant)), imported)

    def action_export_memory(self) -> None:
        default = Path.cwd() / f"{self.assistant.profile.name}-memory.lpm"
        ops = DataOps(self.assistant)

        def export(target: Path, with_history: bool) -> None:
            what = "Memory and chats" if with_history else "Memory"
            run_action(
                self.app,
                self,
                lambda: ops.export(target, with_history=with_history),
                f"{what} exported to {target} (mode 0600).",
                name="export",
            )

        def chosen(path: str | None) -> None:
            if not path:
                return
            target = Path(path).expanduser()
            self.app.push_screen(
                ChoiceDialog(
                    "Include your chats?",
                    [
                        ("memory", "Memory only (slots, labels, audit log)"),
                        ("history", "Memory and every chat of this profile"),
                    ],
                ),
                lambda choice: choice and export(target, choice == "history"),
            )

        self.app.push_screen(
            TextPrompt(
                "Export memory to",
                value=str(default),
                hint="A .lpm file, private (0600). Next you choose whether chats go in.",
            ),
            chosen,
        )

    def action_wipe(self) -> None:
        if self._busy():
            return
        ops = DataOps(self.assistant)
        profile = self.assistant.profile.name
        choices = [
            (key, label.replace("this profile", f"profile {profile}"))
            for key, label in WIPE_SCOPES.items()
        ]

        def scope_chosen(scope: str | None) -> None:
            if scope is None:
                return
            lines = [f"Data dir: {locations.data_dir()}", *ops.wipe_plan(scope)]

            def confirmed(yes: bool | None) -> None:
                if yes:
                    run_action(
                        self.app,
                        self,
                        lambda: ops.wipe(scope),
                        f"Wiped: {WIPE_SCOPES[scope].lower()}.",
                        name="wipe",
                    )

            self.app.push_screen(
                ConfirmDialog("Wipe: this deletes", lines, confirm="Wipe"), confirmed
            )

        self.app.push_screen(ChoiceDialog("What to wipe?", choices), scope_chosen)
