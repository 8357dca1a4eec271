"""Import a chat log: type a path, see what a dry run would add, then confirm.

Both the dry run and the import run in a thread worker (a 200 MB export takes a while); the
screen only shows their lines. Nothing is written until the user presses "Import" after a
preview of the very same paths. Paths and report lines are shown literally.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from lpm_local.errors import LpmError
from tui.data_ops import DataOps, ImportPreview
from tui.formatting import literal

HINT = (
    "ChatGPT / Claude / Open WebUI exports, ShareGPT, OpenAI JSONL, oterm / elia / llm "
    "databases, Markdown or text transcripts, .lpm bundles. Several paths: separate with ;"
)


def parse_paths(text: str) -> list[Path]:
    """'a.json; ~/b.zip' -> [Path('a.json'), Path('/home/u/b.zip')] (blank parts dropped)."""
    return [Path(part.strip()).expanduser() for part in text.split(";") if part.strip()]


class ImportScreen(ModalScreen[list[str] | None]):
    """Dismisses with the import's report lines, or None if nothing was imported."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, ops: DataOps) -> None:
        super().__init__(classes="dialog-screen")
        self.ops = ops
        self.previewed: list[Path] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="import-dialog"):
            yield Static(Content("Import a file").stylize("bold"), classes="dialog-title")
            yield Input(placeholder="path to an export (Enter: preview)", id="import-path")
            yield Static(HINT, markup=False, classes="dialog-line dim")
            # Static text, not a LoadingIndicator: its animation would slow the parser thread.
            yield Static("reading the file…", markup=False, id="import-busy")
            with VerticalScroll(id="import-preview"):
                yield Static("", markup=False, id="import-lines")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Import", id="confirm", variant="primary", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#import-busy").display = False
        self.query_one("#import-path", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        # Editing the path invalidates the preview: only what was previewed can be imported.
        self.previewed = None
        self.query_one("#confirm", Button).disabled = True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        paths = parse_paths(event.value)
        if not paths:
            self._show(["Type the path of a file to import."])
            return
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            self._show([f"No such file: {m}" for m in missing])
            return
        self._busy(True)
        self.preview(paths)

    @work(thread=True, exclusive=True, group="import")
    def preview(self, paths: list[Path]) -> None:
        try:
            result = self.ops.preview_import(paths)
        except LpmError as error:
            result = ImportPreview([str(error)], adds_anything=False)
        self.app.call_from_thread(self._previewed, paths, result)

    def _previewed(self, paths: list[Path], result: ImportPreview) -> None:
        self._busy(False)
        lines = ["A dry run found (nothing written yet):", *result.lines]
        if not result.adds_anything:
            lines.append("Nothing new to add.")
        self._show(lines)
        self.previewed = paths if result.adds_anything else None
        confirm = self.query_one("#confirm", Button)
        confirm.disabled = self.previewed is None
        if not confirm.disabled:
            confirm.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        elif event.button.id == "confirm" and self.previewed:
            self._busy(True)
            self.commit(self.previewed)

    @work(thread=True, exclusive=True, group="import")
    def commit(self, paths: list[Path]) -> None:
        try:
            lines = self.ops.commit_import(paths)
        except LpmError as error:
            self.app.call_from_thread(self._failed, str(error))
            return
        self.app.call_from_thread(self.dismiss, lines)

    def _failed(self, error: str) -> None:
        self._busy(False)
        self._show([f"Import failed, nothing was written: {error}"])

    def _busy(self, busy: bool) -> None:
        self.query_one("#import-busy").display = busy
        self.query_one("#confirm", Button).disabled = True if busy else self.previewed is None

    def _show(self, lines: list[str]) -> None:
        self.query_one("#import-lines", Static).update(literal("\n".join(lines)))
