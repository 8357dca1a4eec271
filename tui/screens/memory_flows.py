"""Memory actions that need a dialog first (roll back, forget), shared by the chat screen and
the inspector, and the one way every memory/data action runs: off the UI thread, with its
outcome as a toast and a ``MemoryChanged`` message so every panel re-reads the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import App

from lpm_local.errors import LpmError
from lpm_local.storage.records import Conversation
from tui.formatting import ago, loss, one_line
from tui.memory_adapter import MemoryAdapter, MemoryUnavailable
from tui.messages import MemoryChanged
from tui.screens.dialogs import ChoiceDialog, ConfirmDialog


def run_action(
    app: App, target: Any, work: Callable[[], object], done: str, *, name: str = "memory-action"
) -> None:
    """Run ``work`` in a thread worker; toast ``done`` (or the error) and post MemoryChanged.

    ``target`` (a screen) receives ``MemoryChanged``; user-caused failures (``LpmError``,
    memory not available) become one-line toasts, never tracebacks.
    """

    def job() -> None:
        try:
            work()
        except (LpmError, MemoryUnavailable) as error:
            app.call_from_thread(app.notify, str(error), severity="warning", markup=False)
            return
        except Exception as error:  # noqa: BLE001 - a bug, shown rather than crashing the chat
            app.call_from_thread(
                app.notify, f"{type(error).__name__}: {error}", severity="error", markup=False
            )
            return
        app.call_from_thread(app.notify, done, markup=False)
        target.post_message(MemoryChanged(name))

    app.run_worker(job, thread=True, group=name, name=name, exit_on_error=False)


def require_runtime(app: App, adapter: MemoryAdapter, action: str) -> bool:
    """True if the memory runtime is there; otherwise say so, once, in the user's words."""
    if adapter.available:
        return True
    app.notify(str(MemoryUnavailable(action)), severity="warning", markup=False)
    return False


def ask_rollback(app: App, target: Any, adapter: MemoryAdapter) -> None:
    """Pick a memory version (newest first, with its held-out loss) and make it current."""
    if not require_runtime(app, adapter, "roll back"):
        return
    versions = list(reversed(adapter.versions()))
    if not versions:
        app.notify("No memory versions yet: nothing to roll back to.", markup=False)
        return
    current = adapter.status().version_id
    choices = [
        (
            str(v.id),
            (
                f"#{v.id}  {ago(v.created_at)}  held-out {loss(v.heldout_loss)}"
                f"  train {loss(v.train_loss)}"
            ),
        )
        for v in versions
    ]

    def chosen(key: str | None) -> None:
        if key is None or int(key) == current:
            return
        version_id = int(key)
        run_action(
            app,
            target,
            lambda: adapter.rollback(version_id),
            f"Memory rolled back to version #{version_id}.",
            name="rollback",
        )

    app.push_screen(
        ChoiceDialog(
            "Roll back memory to",
            choices,
            current=str(current),
            hint="Later versions are kept; you can roll forward again.",
        ),
        chosen,
    )


def ask_forget(app: App, target: Any, adapter: MemoryAdapter, conversation: Conversation) -> None:
    """Confirm, then drop ``conversation`` from memory (the runtime refits from before it)."""
    if not require_runtime(app, adapter, "forget a conversation"):
        return
    lines = [
        (
            f"Conversation: {one_line(conversation.title, 60)} "
            f"({conversation.message_count} messages)"
        ),
        (
            "Memory goes back to the newest version that did not learn from it; the versions "
            "that did are deleted. Then it refits on the rest of your history."
        ),
        "The chat itself stays in your list, marked 'not learned', and is never learned again.",
    ]

    def confirmed(yes: bool | None) -> None:
        if yes:
            run_action(
                app,
                target,
                lambda: adapter.forget(conversation.id),
                "Conversation forgotten: memory rolled back, refitting without it.",
                name="forget",
            )

    app.push_screen(ConfirmDialog("Forget this conversation?", lines, confirm="Forget"), confirmed)
