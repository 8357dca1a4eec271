"""Import, export and wipe, as the TUI calls them.

The library modules (``lpm_local.data.importing``, ``lpm_local.data.bundle.archive``, ``lpm_local.data.wipe``) are the
only place these things happen; this module calls them and passes their reports' own lines
(``ImportSummary.lines()``, ``WipeReport.lines()``) to the dialogs. A module that is missing
(a trimmed install) makes its action say "not available yet" instead of failing. What a wipe
deletes is counted here from the store beforehand, so the confirmation names it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.memory_adapter import MemoryAdapter, optional_module

WIPE_SCOPES = {
    "memory": "Forget the memory (keep chats)",
    "profile": "Everything of this profile",
    "all": "Everything, all profiles",
}


class FeatureMissing(RuntimeError):
    """The library module for an action is not there yet."""


@dataclass(frozen=True)
class ImportPreview:
    """What a dry run found, as lines, and whether committing would add anything."""

    lines: list[str]
    adds_anything: bool


def _module(name: str, what: str) -> Any:
    module = optional_module(name)
    if module is None:
        raise FeatureMissing(f"{what} is not available yet ({name} is not installed)")
    return module


class DataOps:
    """Import/export/wipe for the assistant's store and active profile."""

    def __init__(self, assistant: Any) -> None:
        self.assistant = assistant

    @property
    def store(self) -> Any:
        return self.assistant.store

    @property
    def profile(self) -> Any:
        return self.assistant.profile

    # -- import ---------------------------------------------------------------------------------

    def preview_import(self, paths: list[Path]) -> ImportPreview:
        """A dry run: every file parsed and checked, nothing written."""
        importing = _module("lpm_local.data.importing", "import")
        summary = importing.import_files(self.store, paths, profile=self.profile.name, dry_run=True)
        added = sum(f.messages for f in summary.files if f.status != "duplicate")
        return ImportPreview(lines=summary.lines(), adds_anything=added > 0)

    def commit_import(self, paths: list[Path]) -> list[str]:
        """Import for real (one transaction per file); asks the memory to refit afterwards."""
        importing = _module("lpm_local.data.importing", "import")
        summary = importing.import_files(self.store, paths, profile=self.profile.name)
        runtime = getattr(self.assistant, "memory", None)
        if summary.messages and hasattr(runtime, "refit_now") and runtime.enabled:
            runtime.refit_now("import")
        return summary.lines()

    # -- export ---------------------------------------------------------------------------------

    def export(self, path: Path, *, with_history: bool = False) -> list[str]:
        bundle = _module("lpm_local.data.bundle.archive", "export")
        result = bundle.export_bundle(
            self.store,
            path,
            profile=self.profile.name,
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

    def wipe_plan(self, scope: str) -> list[str]:
        """Exactly what ``wipe(scope)`` deletes, counted now from the store."""
        if scope not in WIPE_SCOPES:
            raise ValueError(f"unknown wipe scope {scope!r}; expected one of {sorted(WIPE_SCOPES)}")
        profiles = [self.profile] if scope != "all" else list(self.store.list_profiles())
        lines = []
        for profile in profiles:
            versions = len(self.store.list_memory_versions(profile.id))
            conversations = self.store.list_conversations(profile.id)
            messages = sum(c.message_count for c in conversations)
            if scope == "memory":
                lines.append(
                    f"Profile {profile.name}: {versions} memory versions and their "
                    "refit history. Chats are kept."
                )
            else:
                lines.append(
                    f"Profile {profile.name}: {len(conversations)} conversations, "
                    f"{messages} messages, {versions} memory versions, imports and "
                    "audit log, and the profile itself."
                )
        if scope == "all":
            lines.append("Every setting, and .lpm bundles kept under the data dir.")
        lines.append(
            "Deleted bytes are zeroed and the database is vacuumed; this cannot be undone."
        )
        return lines

    def wipe(self, scope: str) -> list[str]:
        if scope not in WIPE_SCOPES:
            raise ValueError(f"unknown wipe scope {scope!r}")
        wipe = _module("lpm_local.data.wipe", "wipe")
        report = wipe.wipe(self.store, wipe.WipeScope.of(self.store, scope, self.profile.name))
        runtime = getattr(self.assistant, "memory", None)
        if scope == "memory" and hasattr(runtime, "reload"):
            runtime.reload()  # the slots in use were just deleted
        return report.lines()
