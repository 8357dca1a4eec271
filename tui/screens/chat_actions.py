"""The chat screen's actions on one conversation: rename, export, delete.

Each works on the open conversation, or on the one highlighted in the sidebar (``r``, ``e``,
``d`` there), and each is in the command palette. Delete does what `lpm chats delete` does: the
memory forgets the chat first (back to the version from before it learned it, and a refit of
the rest is requested), then the chat and its messages are deleted. A mixin so ``chat.py``
stays about chatting; it expects the screen's ``assistant``, ``adapter``, ``conversation_id``,
``_busy``, ``refresh_chrome`` and ``open_conversation``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpm_local import locations
from lpm_local.data.chat_export import FORMATS, render
from lpm_local.errors import BadInput
from tui.formatting import one_line
from tui.memory_adapter import MemoryUnavailable
from tui.screens.dialogs import ConfirmDialog, TextPrompt

TITLE_LIMIT = 200  # characters of a title typed in the rename dialog


def export_chat_file(store: Any, conversation_id: int, target: Path) -> int:
    """Write one conversation to ``target`` (format from its suffix), 0600, atomically."""
    fmt = target.suffix.lstrip(".").lower()
    if fmt == "markdown":
        fmt = "md"
    if fmt not in FORMATS:
        raise BadInput(
            f"{target.name}: cannot tell the format from the name",
            hint="end it in .md, .json or .jsonl",
        )
    chat = store.get_conversation(conversation_id)
    text = render([(chat, store.messages(conversation_id))], fmt)
    locations.write_private_atomic(target, text.encode("utf-8"))
    return chat.message_count


def forget_then_delete(adapter: Any, store: Any, profile_id: int, conversation_id: int) -> None:
    """Forget ``conversation_id`` from memory, then delete it (the memory goes first: it needs
    the chat's messages to tell which versions learned from it)."""
    try:
        # The runtime also swaps its slots in memory and asks for a refit without the chat.
        adapter.forget(conversation_id)
    except MemoryUnavailable:
        from lpm_local.memory import requests
        from lpm_local.memory.versions import forget_conversation

        report = forget_conversation(store, profile_id, conversation_id)
        if report.deleted_version_ids or report.previous_version_id != report.restored_version_id:
            requests.request_refit(store, profile_id, "forget")
    store.delete_conversation(conversation_id)


class ChatActions:
    """Mixed into ``ChatScreen``."""

    assistant: Any
    adapter: Any

    def _target(self, conversation_id: int | None, what: str) -> int | None:
        target = conversation_id or self.conversation_id
        if target is None:
            self.notify(f"Nothing to {what} yet: send a message first.", markup=False)
        return target

    def action_rename_chat(self, conversation_id: int | None = None) -> None:
        target = self._target(conversation_id, "rename")
        if target is None:
            return
        current = self.assistant.store.get_conversation(target).title or ""

        def rename(title: str | None) -> None:
            title = " ".join((title or "").split())[:TITLE_LIMIT]
            if title:
                self.assistant.store.rename_conversation(target, title)
                self.refresh_chrome()

        self.app.push_screen(TextPrompt(f"Rename chat #{target}", value=current), rename)

    def action_export_chat(self, conversation_id: int | None = None) -> None:
        target = self._target(conversation_id, "export")
        if target is None:
            return
        default = Path.cwd() / f"lpm-chat-{target}.md"

        def chosen(path: str | None) -> None:
            if not path:
                return
            file = Path(path).expanduser()
            try:
                count = export_chat_file(self.assistant.store, target, file)
            except (BadInput, OSError) as error:
                message = str(error) if isinstance(error, BadInput) else f"{file}: {error}"
                self.notify(message, severity="error", markup=False)
                return
            self.notify(f"Chat #{target} ({count} messages) written to {file} (0600).")

        self.app.push_screen(
            TextPrompt(
                f"Export chat #{target} to",
                value=str(default),
                hint="The name's ending picks the format: .md, .json or .jsonl. Private (0600).",
            ),
            chosen,
        )

    def action_delete_chat(self, conversation_id: int | None = None) -> None:
        target = conversation_id or self.conversation_id
        if target is None or (target == self.conversation_id and self._busy()):
            return
        store, profile_id = self.assistant.store, self.assistant.profile.id
        conversation = store.get_conversation(target)
        lines = [
            f"Chat #{target}: {one_line(conversation.title, 60)}",
            (
                f"Deletes this conversation and its {conversation.message_count} messages "
                "from this machine."
            ),
            "The memory forgets it too: it goes back to before it learned this chat, then "
            "refits on the rest.",
        ]

        async def deleted() -> None:
            if target == self.conversation_id:
                await self.open_conversation(None)
            else:
                self.refresh_chrome()
            self.notify(f"Chat #{target} deleted and forgotten from memory.", markup=False)

        def job() -> None:
            try:
                forget_then_delete(self.adapter, store, profile_id, target)
            except Exception as error:  # noqa: BLE001 - shown, never a crash of the chat
                self.app.call_from_thread(
                    self.notify, f"Could not delete: {error}", severity="error", markup=False
                )
                return
            self.app.call_from_thread(deleted)

        def confirm(yes: bool | None) -> None:
            if yes:
                # Off the UI thread: forgetting may wait for a running refit to stop.
                self.run_worker(job, thread=True, group="delete", exit_on_error=False)

        self.app.push_screen(ConfirmDialog("Delete this chat?", lines), confirm)
