"""``MemoryRuntime`` in a chat: prefix, memory off = the bare model through ChatSession (R22),
scheduling, control, threads."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from lpm_local.chat.engine import ChatEngine
from lpm_local.chat.session import ChatSession
from lpm_local.errors import NotFound
from lpm_local.memory import requests
from lpm_local.memory.frozen import load_frozen_memory
from lpm_local.memory.inspection import reply_attention
from lpm_local.memory.refit import RefitSettings
from lpm_local.memory.runtime import MemoryRuntime
from lpm_local.memory.slots import init_slots, slots_to_bytes
from lpm_local.storage.records import NewMessage
from lpm_local.storage.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = RefitSettings(steps=4, eval_every=2, patience=3, max_windows=10)


@pytest.fixture
def make_runtime(store, frozen):
    made: list[MemoryRuntime] = []

    def make(profile, **kw):
        kw.setdefault("settings", FAST)
        kw.setdefault("frozen", frozen)
        runtime = MemoryRuntime(store, kw["frozen"].backbone, profile, **kw)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


class SpyEngine(ChatEngine):
    """The real engine; remembers the prefix each turn was given."""

    prefixes: list

    def stream(self, turns, *, prefix=None, **kw):
        self.prefixes.append(prefix)
        return super().stream(turns, prefix=prefix, **kw)


def spy_engine(backbone) -> SpyEngine:
    engine = SpyEngine(backbone)
    engine.prefixes = []
    return engine


def put_version(
    store: Store,
    frozen,
    profile_id: int,
    seed: int = 1,
    backbone: str | None = None,
    projector_sha256: str | None = None,
):
    """A stored version with distinctive slots (as a refit would write, without fitting)."""
    weight = frozen.backbone.model.get_input_embeddings().weight
    slots = init_slots(frozen.config, weight, seed=seed) * 3.0
    blob = slots_to_bytes(slots, frozen.config)
    version = store.add_memory_version(
        profile_id,
        tensors=blob,
        backbone=backbone or frozen.backbone.name,
        projector_sha256=projector_sha256 or frozen.projector_sha256,
        config_json=None,
        heldout_loss=1.0,
    )
    return version, slots


def add_history(store: Store, profile_id: int, n_convs: int = 2, n_exchanges: int = 3) -> list[int]:
    ids = []
    for c in range(n_convs):
        conv = store.create_conversation(profile_id, f"chat {c}")
        store.add_messages(
            conv.id,
            [
                NewMessage(r, t)
                for i in range(n_exchanges)
                for r, t in (
                    ("user", f"My sister is a nurse in Lyon, note {c}.{i}."),
                    ("assistant", "I will remember that, thank you."),
                )
            ],
        )
        ids.append(conv.id)
    return ids


def test_identity_projector_is_deterministic_and_is_prompt_tuning(tiny_backbone):
    from lpm_local.memory.frozen import prompt_tuning_config

    config = prompt_tuning_config(tiny_backbone.hidden_size)
    a, b = load_frozen_memory(tiny_backbone, config), load_frozen_memory(tiny_backbone, config)
    assert not a.shipped and a.projector_sha256 == b.projector_sha256
    slots = torch.randn(a.config.n_slots, a.config.slot_dim)
    soft, attention = a.soft(slots, "I like green tea")
    assert torch.allclose(soft, slots, atol=1e-6)  # soft token m is slot m
    assert attention.shape == (a.config.heads, a.config.n_soft_tokens, a.config.n_slots)


def test_prefix_is_fp32_without_grad_even_inside_grad_mode(store, frozen, make_runtime):
    profile = store.ensure_profile()
    put_version(store, frozen, profile.id)
    runtime = make_runtime(profile, autostart=False)
    with torch.enable_grad():
        soft, attention = runtime.prefix("hello there")
    runtime.after_turn(profile.id)
    assert soft.shape == (frozen.config.n_soft_tokens, frozen.backbone.hidden_size)
    assert soft.dtype == torch.float32
    assert not soft.requires_grad and not attention.requires_grad
    assert torch.allclose(attention.sum(-1), torch.ones(attention.shape[:-1]))


def test_no_version_yet_means_no_prefix(store, make_runtime):
    profile = store.ensure_profile()
    runtime = make_runtime(profile, autostart=False)
    assert runtime.prefix("hi") is None
    assert runtime.state.current_version_id is None


@pytest.mark.parametrize("enabled", [False, True])
def test_memory_off_is_the_bare_backbone_through_chat_session(store, frozen, make_runtime, enabled):
    """R22 end to end: with memory off the turn gets no prefix and equals the bare model."""
    profile = store.ensure_profile()
    put_version(store, frozen, profile.id)
    store.set_memory_enabled(profile.id, enabled)
    runtime = make_runtime(profile, autostart=False)
    engine = spy_engine(frozen.backbone)
    session = ChatSession(engine=engine, store=store, profile=profile, memory=runtime)
    reply = "".join(session.send("What do you know about me?", max_new_tokens=4))
    prefix = engine.prefixes[-1]
    bare = ChatEngine(frozen.backbone)
    bare_reply = "".join(bare.stream(session.turns[:1], max_new_tokens=4))
    ids = engine.encode(session.turns[:1])
    with torch.no_grad():
        reference = frozen.backbone.model(ids).logits
    logits = engine.logits(ids, prefix)
    if not enabled:
        assert prefix is None and session.last.attention is None
        assert engine.last_stats.prefix_tokens == 0
        assert torch.allclose(logits, reference, atol=1e-5)
        assert reply == bare_reply
    else:
        assert prefix.shape == (frozen.config.n_soft_tokens, frozen.backbone.hidden_size)
        assert engine.last_stats.prefix_tokens == frozen.config.n_soft_tokens
        assert not torch.allclose(logits, reference, atol=1e-3)


def test_a_refit_runs_after_k_user_turns_and_events_flow(store, frozen, make_runtime):
    profile = store.ensure_profile()
    add_history(store, profile.id, n_convs=1, n_exchanges=1)  # one user turn already
    runtime = make_runtime(profile, refit_every=3, autostart=False)
    events = []
    runtime.add_listener(events.append)
    session = ChatSession(
        engine=ChatEngine(frozen.backbone), store=store, profile=profile, memory=runtime
    )
    list(session.send("I live in Lyon.", max_new_tokens=2))
    assert runtime.wait_idle(30) and not events  # one turn: nothing yet
    list(session.send("I have a sister.", max_new_tokens=2))
    assert runtime.wait_idle(120)
    done = [e for e in events if e.done]
    assert len(done) == 1 and done[0].result.status in ("committed", "no_improvement")
    fitting = [e.fraction for e in events if e.stage == "fitting"]
    assert fitting and fitting == sorted(fitting)
    assert runtime.state.last_status == done[0].result.status and not runtime.state.running
    assert runtime.state.last_refit_at is not None
    if done[0].result.committed:
        assert runtime.state.current_version_id == done[0].result.new_version_id
    # The attempt is remembered: the next turn alone does not start another refit.
    list(session.send("And a cat.", max_new_tokens=2))
    assert runtime.wait_idle(30) and len([e for e in events if e.done]) == 1


def test_memory_off_learns_nothing(store, frozen, make_runtime):
    profile = store.ensure_profile()
    add_history(store, profile.id, n_convs=2, n_exchanges=4)
    store.set_memory_enabled(profile.id, False)
    requests.request_refit(store, profile.id, "import")
    runtime = make_runtime(profile, refit_every=1)
    runtime.prefix("hi")
    runtime.after_turn(profile.id)
    assert runtime.wait_idle(10)
    assert store.list_refits(profile.id) == []


def test_reply_attention_is_kept_and_feeds_slot_usage(store, frozen, make_runtime):
    profile = store.ensure_profile()
    version, _ = put_version(store, frozen, profile.id)
    runtime = make_runtime(profile, autostart=False)
    session = ChatSession(
        engine=ChatEngine(frozen.backbone), store=store, profile=profile, memory=runtime
    )
    list(session.send("Tell me about tea.", max_new_tokens=2))
    stored, version_id = reply_attention(
        store, session.last.reply_message_id, profile_id=profile.id
    )
    assert version_id == version.id
    assert torch.equal(stored, session.last.attention)
    info = runtime.slot_info()
    assert frozen.config.routed  # the default memory of a backbone without a trained projector
    assert len(info) == frozen.config.route_groups and {s.kind for s in info} == {"group"}
    assert all(isinstance(s.label, str) and s.label for s in info)
    assert sum(s.usage for s in info) == pytest.approx(1.0, abs=1e-4)
    assert all(len(s.usage_history) == 1 for s in info)


def test_a_pending_request_is_served_on_start_and_then_cleared(store, make_runtime):
    profile = store.ensure_profile()
    add_history(store, profile.id)
    requests.request_refit(store, profile.id, "import of chat.json")
    runtime = make_runtime(profile)
    assert runtime.wait_idle(120)
    assert requests.pending_refit(store, profile.id) is None
    assert '"reason": "import of chat.json"' in store.list_refits(profile.id)[0].detail


def test_rollback_puts_that_versions_slots_in_use(store, frozen, make_runtime):
    profile = store.ensure_profile()
    first, first_slots = put_version(store, frozen, profile.id, seed=1)
    put_version(store, frozen, profile.id, seed=2)
    runtime = make_runtime(profile, autostart=False)
    assert not torch.equal(runtime.current()[0], first_slots)
    runtime.rollback(first.id)
    slots, version_id = runtime.current()
    assert version_id == first.id and torch.equal(slots, first_slots)


def test_forget_excludes_refits_and_never_relearns_it(store, frozen, make_runtime):
    profile = store.ensure_profile()
    _keep, secret = add_history(store, profile.id, n_convs=2, n_exchanges=4)
    runtime = make_runtime(profile, autostart=False)
    runtime.refit_now()
    assert runtime.wait_idle(120)
    learned = runtime.state.current_version_id
    report = runtime.forget(secret)
    assert report.previous_version_id == learned
    if learned is not None:  # it was trained through the secret: gone, nothing clean before it
        assert report.deleted_version_ids == (learned,) and report.restored_version_id is None
    assert store.get_conversation(secret).exclude_from_memory
    assert runtime.wait_idle(120)
    for version in store.list_memory_versions(profile.id):
        assert f'"{secret}"' not in (version.config_json or "")  # not among its sources


def test_a_pause_for_the_chat_then_cancel_writes_nothing(store, frozen, make_runtime):
    profile = store.ensure_profile()
    add_history(store, profile.id, n_convs=2, n_exchanges=4)
    runtime = make_runtime(profile, autostart=False, refit_every=100)
    runtime.prefix("a turn is generating")  # no after_turn yet: the chat is busy
    runtime.refit_now()
    deadline = threading.Event()
    for _ in range(600):
        if runtime.state.stage == "paused for the chat":
            break
        deadline.wait(0.05)
    assert runtime.state.stage == "paused for the chat"
    runtime.cancel_refit()
    assert runtime.wait_idle(30)
    assert runtime.state.last_status == "cancelled"
    assert store.list_memory_versions(profile.id) == []


def test_close_joins_a_running_refit(store, frozen, make_runtime):
    profile = store.ensure_profile()
    add_history(store, profile.id, n_convs=2, n_exchanges=4)
    slow = dataclasses.replace(FAST, steps=10_000, patience=10_000)
    runtime = make_runtime(profile, autostart=False, settings=slow)
    started = threading.Event()
    runtime.add_listener(lambda e: started.set() if e.stage == "fitting" else None)
    runtime.refit_now()
    assert started.wait(60)
    runtime.close()
    assert not runtime.state.running
    assert store.list_refits(profile.id)[0].status == "cancelled"


@pytest.mark.parametrize("damage", ["bytes", "backbone", "projector"])
def test_an_unusable_current_version_is_reported_not_fatal(store, frozen, make_runtime, damage):
    profile = store.ensure_profile()
    if damage == "bytes":
        version, _ = put_version(store, frozen, profile.id)
        with store.transaction():
            store.conn.execute(
                "UPDATE memory_versions SET tensors = ? WHERE id = ?",
                [version.tensors[:-1] + b"\x00", version.id],
            )
    elif damage == "backbone":
        put_version(store, frozen, profile.id, backbone="some-other-model")
    else:  # a bank keyed at an earlier routing layer reads no question right: refused
        assert frozen.config.routed
        put_version(store, frozen, profile.id, projector_sha256="0" * 64)
    runtime = make_runtime(profile, autostart=False)
    assert runtime.prefix("hi") is None
    runtime.after_turn(profile.id)
    expected = {"bytes": "sha256", "backbone": "some-other-model", "projector": "another projector"}
    assert expected[damage] in runtime.state.problem


def test_grad_mode_is_per_thread_so_chat_and_refit_can_share_the_model(store, frozen, make_runtime):
    seen = {}
    with torch.no_grad():
        t = threading.Thread(target=lambda: seen.update(child=torch.is_grad_enabled()))
        t.start()
        t.join()
    assert seen["child"] is True  # a refit thread still takes gradients while the chat runs

    profile = store.ensure_profile()
    add_history(store, profile.id, n_convs=2, n_exchanges=4)
    put_version(store, frozen, profile.id)
    endless = dataclasses.replace(FAST, steps=10_000, patience=10_000)
    runtime = make_runtime(profile, autostart=False, settings=endless)
    steps = []
    runtime.add_listener(lambda e: steps.append(e.fraction) if e.stage == "fitting" else None)
    runtime.refit_now()
    while not steps:
        threading.Event().wait(0.01)
    softs = []
    while len(steps) < 6:  # chat turns interleaved with the refit thread's optimiser steps
        soft, _ = runtime.prefix("What is my sister's job?")
        runtime.after_turn(profile.id)
        assert torch.is_grad_enabled() and not soft.requires_grad
        softs.append(soft)
        threading.Event().wait(0.02)
    assert runtime.state.running and len(softs) >= 2
    assert all(torch.equal(s, softs[0]) for s in softs)  # slots swap only on a commit
    runtime.cancel_refit()
    assert runtime.wait_idle(60)


def test_reply_attention_is_trimmed_per_profile_and_cascades(store, monkeypatch):
    from lpm_local.memory import inspection as memory_inspect

    monkeypatch.setattr(memory_inspect, "KEEP_REPLIES", 3)
    mine, theirs = store.ensure_profile(), store.create_profile("other")
    replies = {}
    for profile in (mine, theirs):
        conv = store.create_conversation(profile.id, "c")
        replies[profile.id] = [
            store.add_message(conv.id, "assistant", f"r{i}").id for i in range(5)
        ]
        for message_id in replies[profile.id]:
            attention = torch.softmax(torch.randn(2, 4, 4), dim=-1)
            memory_inspect.record_reply_attention(store, message_id, None, attention)
    assert len(memory_inspect.recent_slot_usage(store, mine.id, 4)) == 3
    assert len(memory_inspect.recent_slot_usage(store, theirs.id, 4)) == 3
    with pytest.raises(NotFound, match="no memory attention"):
        memory_inspect.reply_attention(store, replies[mine.id][0])  # trimmed: the oldest
    memory_inspect.reply_attention(store, replies[mine.id][-1], profile_id=mine.id)
    with pytest.raises(NotFound, match="no memory attention"):  # not this profile's reply
        memory_inspect.reply_attention(store, replies[theirs.id][-1], profile_id=mine.id)
    store.delete_profile("other")
    assert memory_inspect.recent_slot_usage(store, theirs.id, 4) == []
    assert store._scalar("SELECT count(*) FROM reply_attention") == 3


def test_heatmap_shows_the_dominant_slot():
    from lpm_local.memory.inspection import heatmap

    attention = torch.full((2, 3, 4), 0.02)
    attention[:, :, 2] = 0.94
    lines = heatmap(attention).splitlines()
    assert len(lines) == 1 + 3 + 1
    for row in lines[1:-1]:  # "  soft m" + two spaces, then a 2-char cell per slot, 1 apart
        cells = [row[8 + 3 * n : 10 + 3 * n] for n in range(4)]
        assert cells == ["  ", "  ", "██", "  "], row
    assert lines[-1].split()[1:] == ["2", "2", "94", "2"]


def test_shipped_projector_is_used_and_no_memory_before_the_first_refit(
    store, tiny_backbone, tmp_path, monkeypatch, make_runtime
):
    from lpm_local.backbones import registry as models
    from lpm_local.memory.frozen import prompt_tuning_config
    from lpm_local.memory.projector import Projector

    config = prompt_tuning_config(tiny_backbone.hidden_size)
    Projector(config).save(tmp_path / "projector.safetensors")
    monkeypatch.setattr(models, "projector_path", lambda name: tmp_path / "projector.safetensors")
    frozen = load_frozen_memory(tiny_backbone)
    assert (
        frozen.shipped
        and frozen.projector_sha256 == Projector.load(tmp_path / "projector.safetensors").sha256()
    )
    profile = store.ensure_profile()
    add_history(store, profile.id, n_convs=1, n_exchanges=2)
    runtime = make_runtime(profile, frozen=frozen, autostart=False)
    assert runtime.prefix("What is my sister's job?") is None  # unfitted slots are never shown
    runtime.after_turn(profile.id)
    assert runtime.state.current_version_id is None
