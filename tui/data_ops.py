"""Import, export and wipe, as the TUI calls them.

The library (``lpm_local.data.importing``, ``lpm_local.data.bundle.export``,
``lpm_local.data.wipe``) is the only place these things happen; this module calls it and hands
its reports' own lines (``ImportSummary.lines()``, ``WipeReport.lines()``) to the dialogs. A
wipe is the CLI's wipe: ``wipe_and_verify`` deletes, vacuums and then scans every file under the
data dir for what it deleted; its confirmation is built from ``planned``, the counts the wipe
itself reports, so it names exactly what goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpm_local.data.importing import import_files
from lpm_local.data.wipe import WipeScope, planned, wipe_and_verify
from lpm_local.errors import LpmError
from tui.memory_adapter import AssistantParts, MemoryAdapter

WIPE_SCOPES = {
    "memory": "Forget the memory (keep chats)",
    "profile": "Everything of this profile",
    "all": "Everything, all profiles",
}


@dataclass(frozen=True)
class ImportPreview:
    """What a dry run found, as lines, and whether committing would add anything."""

    lines: list[str]
    adds_anything: bool


class DataOps:
    """Import/export/wipe for the assistant's store and active profile."""

    def __init__(self, assistant: AssistantParts) -> None:
        self.assistant = assistant

    # -- import ---------------------------------------------------------------------------------

    def preview_import(self, paths: list[Path]) -> ImportPreview:
        """A dry run: every file parsed and checked, nothing written."""
        a = self.assistant
        summary = import_files(a.store, paths, profile=a.profile.name, dry_run=True)
        added = sum(f.messages for f in summary.files if f.status != "duplicate")
        return ImportPreview(lines=summary.lines(), adds_anything=added > 0)

    def commit_import(self, paths: list[Path]) -> list[str]:
        """Import for real (one transaction per file); asks the memory to refit afterwards."""
        a = self.assistant
        summary = import_files(a.store, paths, profile=a.profile.name)
        runtime = a.memory
        if summary.messages and runtime is not None and runtime.enabled:
            runtime.refit_now("import")
        return summary.lines()

    # -- export ---------------------------------------------------------------------------------

    def export(self, path: Path, *, with_history: bool = False) -> list[str]:
        # Imported here: the bundle code reads tensors and so imports torch, which the TUI
        # must not wait for before its first paint.
        from lpm_local.data.bundle.export import export_bundle

        a = self.assistant
        result = export_bundle(
            a.store,
            path,
            profile=a.profile.name,
            with_history=with_history,
            slot_info=self._slot_info(),
        )
        version = (
            f"memory version #{result.memory_version}" if result.memory_version else "no memory"
        )
        return [
            (
                f"{result.path}: {version}, {result.conversations} conversations, "
                f"{result.n_bytes:,} bytes"
            )
        ]

    def _slot_info(self) -> dict[str, Any] | None:
        """Labels and usage for ``slots.json`` when the runtime can tell them."""
        slots = MemoryAdapter(self.assistant).slots()
        if not slots:
            return None
        return {
            "labels": {str(s.index): s.label for s in slots},
            "usage": {str(s.index): s.usage for s in slots},
        }

    # -- wipe -----------------------------------------------------------------------------------

    def scope(self, kind: str) -> WipeScope:
        """``kind`` (a ``WIPE_SCOPES`` key) over the active profile."""
        if kind not in WIPE_SCOPES:
            raise ValueError(f"unknown wipe scope {kind!r}; expected one of {sorted(WIPE_SCOPES)}")
        return WipeScope.of(self.assistant.store, kind, self.assistant.profile.name)

    def wipe_plan(self, kind: str) -> list[str]:
        """Exactly what ``wipe(kind)`` deletes, as the wipe counts it, counted now."""
        scope = self.scope(kind)
        counts = planned(self.assistant.store, scope)
        listed = ", ".join(f"{n:,} {what}" for what, n in counts.items() if what != "profiles")
        if kind == "memory":
            lines = [f"Profile {scope.profile_name}: {listed}. Chats are kept."]
        elif kind == "profile":
            lines = [f"Profile {scope.profile_name}: {listed}, and the profile itself."]
        else:
            lines = [
                f"All {counts['profiles']:,} profiles: {listed}.",
                ".lpm bundles kept under the data dir.",
            ]
        lines.append(
            "Deleted bytes are zeroed and the database is vacuumed, then every file under the "
            "data dir is scanned for what was deleted. This cannot be undone."
        )
        return lines

    def wipe(self, kind: str) -> list[str]:
        """Wipe and verify (the CLI's path); ``LpmError`` if the scan found deleted values."""
        report = wipe_and_verify(self.assistant.store, self.scope(kind))
        runtime = self.assistant.memory
        if kind == "memory" and runtime is not None:
            runtime.reload()  # the slots in use were just deleted
        if not report.verified:
            raise LpmError(
                "the wipe could not be verified: deleted values are still in "
                + ", ".join(report.leftovers or [])
            )
        return report.lines()
