"""The TUI's seams to the library: the runtime and the assistant have exactly what the TUI calls,
and the TUI's wipe is the CLI's wipe (counted the same way, verified by the same scan)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields

import pytest
from scripted import ScriptedAssistant, ScriptedMemory

from lpm_local.chat.assistant import Assistant
from lpm_local.data.wipe import planned
from lpm_local.memory.runtime import MemoryRuntime
from lpm_local.storage.records import Profile
from lpm_local.storage.store import Store
from tui.data_ops import DataOps
from tui.memory_adapter import MemoryAdapter, MemoryControls, MemoryUnavailable


def _members(protocol: type) -> dict[str, object]:
    return {k: v for k, v in vars(protocol).items() if not k.startswith("_")}


def _shape(function) -> list[tuple[str, object, object]]:
    """Parameter names, kinds and defaults: what a caller relies on."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("implementation", [MemoryRuntime, ScriptedMemory])
def test_the_runtime_and_its_test_double_have_what_the_tui_calls(implementation):
    members = _members(MemoryControls)
    assert {"state", "refit_now", "slot_info", "forget"} <= set(members)
    for name, wanted in members.items():
        got = inspect.getattr_static(implementation, name, None)
        assert got is not None, f"{implementation.__name__} lacks {name}"
        if isinstance(wanted, property):
            assert isinstance(got, property), f"{implementation.__name__}.{name} is no property"
        else:
            assert _shape(got) == _shape(wanted), f"{implementation.__name__}.{name} differs"


@pytest.mark.parametrize("implementation", [Assistant, ScriptedAssistant])
def test_the_assistant_has_the_parts_the_tui_uses(implementation):
    names = {f.name for f in fields(implementation)}
    assert {"store", "profile", "memory"} <= names


@dataclass
class Parts:
    """An assistant without a model: all that import, export and wipe need."""

    store: Store
    profile: Profile
    memory: MemoryControls | None = None


def _chatted(store: Store) -> Parts:
    profile = store.active_profile()
    conversation = store.create_conversation(profile.id, "to wipe")
    store.add_message(conversation.id, "user", "a sentence that must go")
    store.add_message(conversation.id, "assistant", "and its reply")
    return Parts(store, profile)


def test_the_tui_wipe_counts_what_the_wipe_reports_and_verifies_it(store):
    parts = _chatted(store)
    ops = DataOps(parts)
    scope = ops.scope("profile")
    counts = planned(store, scope)
    assert counts["conversations"] == 1 and counts["messages"] == 2
    plan = ops.wipe_plan("profile")
    assert plan[0].startswith("Profile default: 1 conversations, 2 messages, 0 memory versions")

    lines = ops.wipe("profile")

    assert any(line.startswith("verified: none of") for line in lines), lines
    assert (
        "wiped profile 'default' and everything it holds: 1 profiles, 1 conversations" in (lines[0])
    )
    assert all(p.name != "default" or p.id != parts.profile.id for p in store.list_profiles())


def test_without_a_runtime_the_adapter_says_so_and_reads_the_store(store):
    adapter = MemoryAdapter(_chatted(store))
    status = adapter.status()
    assert not status.available and status.enabled and status.version_count == 0
    assert adapter.slots() == [] and adapter.reply_attention(1) is None
    with pytest.raises(MemoryUnavailable, match="not available yet .refit needs"):
        adapter.refit_now()
    adapter.set_enabled(False)
    assert not adapter.status().enabled
