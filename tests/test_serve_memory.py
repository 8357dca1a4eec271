"""`lpm serve`: memory, profiles, conversation continuation and cancellation, over real HTTP."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import openai
import pytest
from serving import client, running_server

from lpm_local.chat.encoding import Turn
from lpm_local.chat.engine import ChatEngine
from lpm_local.memory.slots import init_slots, slots_to_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYSTEM = "You are a test assistant."
TEMPORARY = {"X-LPM-Temporary": "1"}


@pytest.fixture
def server(store, tiny_backbone):
    with running_server(store, tiny_backbone) as running:
        yield running


def _put_version(store, frozen, profile_id: int):
    """A current memory version with distinctive slots, as a refit would store them."""
    weight = frozen.backbone.model.get_input_embeddings().weight
    slots = init_slots(frozen.config, weight, seed=1) * 3.0
    store.add_memory_version(
        profile_id,
        tensors=slots_to_bytes(slots, frozen.config),
        backbone=frozen.backbone.name,
        projector_sha256=frozen.projector_sha256,
        config_json=None,
        heldout_loss=1.0,
    )
    return slots


def _ask(server, messages, *, headers=None, max_tokens=5, **kw):
    """(reply text, response headers) for one non-streamed request."""
    raw = client(server).chat.completions.with_raw_response.create(
        model=server.service.model_id,
        messages=messages,
        max_tokens=max_tokens,
        extra_headers=headers or {},
        **kw,
    )
    return raw.parse().choices[0].message.content, raw.headers


def _turns(*texts: str) -> list[dict]:
    roles = ("user", "assistant")
    return [{"role": roles[k % 2], "content": t} for k, t in enumerate(texts)]


def _conversations(store, profile_name: str = "default"):
    return store.list_conversations(store.get_profile(profile_name).id)


def test_memory_on_off_and_temporary(server, store, frozen):
    profile = store.active_profile()
    slots = _put_version(store, frozen, profile.id)
    engine, text = ChatEngine(frozen.backbone), "What do you know about me?"
    turns = [Turn("system", SYSTEM), Turn("user", text)]
    soft, _ = frozen.soft(slots, text)
    conditioned = "".join(engine.stream(turns, prefix=soft, max_new_tokens=5)).strip()
    bare = "".join(engine.stream(turns, max_new_tokens=5)).strip()
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]

    reply, headers = _ask(server, messages)
    assert headers["x-lpm-memory"] == "on" and reply == conditioned
    assert len(_conversations(store)) == 1

    reply, headers = _ask(server, messages, headers=TEMPORARY)
    assert headers["x-lpm-memory"] == "off" and reply == bare
    assert "x-lpm-conversation" not in headers
    assert len(_conversations(store)) == 1  # nothing stored

    store.set_memory_enabled(profile.id, False)
    reply, headers = _ask(server, messages)
    assert headers["x-lpm-memory"] == "off" and reply == bare
    assert len(_conversations(store)) == 2  # memory off still keeps the chat


def test_the_profile_comes_from_the_header_then_user_then_the_server(server, store, frozen):
    _put_version(store, frozen, store.active_profile().id)
    store.create_profile("work")
    _, headers = _ask(server, _turns("hello from work"), user="work")
    assert headers["x-lpm-memory"] == "off"  # work has no memory yet
    assert [c.id for c in _conversations(store, "work")] == [int(headers["x-lpm-conversation"])]
    _ask(server, _turns("header wins"), user="default", headers={"X-LPM-Profile": "work"})
    assert len(_conversations(store, "work")) == 2 and _conversations(store) == []
    _, headers = _ask(server, _turns("the server's profile"))
    assert headers["x-lpm-memory"] == "on" and len(_conversations(store)) == 1
    with pytest.raises(openai.NotFoundError) as caught:
        _ask(server, _turns("who?"), user="nobody")
    assert caught.value.body["code"] == "profile_not_found"
    assert [p.name for p in store.list_profiles()] == ["default", "work"]  # none created


def test_a_resent_conversation_is_continued_not_duplicated(server, store):
    system = [{"role": "system", "content": SYSTEM}]
    a1, headers = _ask(server, system + _turns("first question"))
    conversation = int(headers["x-lpm-conversation"])
    a2, headers = _ask(server, system + _turns("first question", a1, "second question"))
    assert int(headers["x-lpm-conversation"]) == conversation
    # Without the system message, and with the whitespace a client may add: still the same.
    _, headers = _ask(server, _turns("first question ", f"\n{a1}", "second question", a2, "third"))
    assert int(headers["x-lpm-conversation"]) == conversation
    stored = store.messages(conversation)
    assert [m.content for m in stored[:5]] == [
        "first question",
        a1,
        "second question",
        a2,
        "third",
    ]
    assert len(stored) == 6 and [m.role for m in stored] == ["user", "assistant"] * 3
    assert len(_conversations(store)) == 1

    # A temporary turn on the same conversation leaves it alone.
    _ask(server, _turns("first question", a1, "aside"), headers=TEMPORARY)
    assert len(store.messages(conversation)) == 6

    # An edited earlier reply matches nothing: a new conversation holding what the client sent.
    _, headers = _ask(server, _turns("first question", "an edited reply", "next"))
    fork = int(headers["x-lpm-conversation"])
    assert fork != conversation
    assert [m.content for m in store.messages(fork)][:3] == [
        "first question",
        "an edited reply",
        "next",
    ]
    # ... and its next turn continues the fork.
    forked = [m.content for m in store.messages(fork)]
    _, headers = _ask(server, _turns(*forked, "and then?"))
    assert int(headers["x-lpm-conversation"]) == fork
    assert len(_conversations(store)) == 2


def _open_stream(server, body: bytes) -> socket.socket:
    url = urlparse(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.hostname}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _wait_idle(server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.queue._running is not None or server.queue.waiting:
        assert time.monotonic() < deadline, "generation did not stop"
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
def test_a_client_that_disconnects_cancels_its_generation(server, store, stream):
    import json

    body = {
        "model": server.service.model_id,
        "messages": _turns("tell me a long story"),
        "max_tokens": 4000,
        "stream": stream,
    }
    sock = _open_stream(server, json.dumps(body).encode())
    if stream:
        received = b""
        while received.count(b"data: ") < 3:  # the role chunk, then text
            received += sock.recv(4096)
    else:
        deadline = time.monotonic() + 30
        while server.queue._running is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
    sock.close()
    _wait_idle(server)
    stats = server.service.engine.last_stats
    assert stats.cancelled and 0 < stats.new_tokens < 4000
    # The turn ended through the normal path: the reply is stored as far as it got.
    (conversation,) = _conversations(store)
    assert [m.role for m in store.messages(conversation.id)] == ["user", "assistant"]
    # The model is free again for the next client.
    reply, _ = _ask(server, _turns("are you there?"), max_tokens=2)
    assert reply is not None


def test_served_turns_schedule_a_background_refit_that_does_not_hold_requests(store, frozen):
    from lpm_local.memory.refit import RefitSettings
    from lpm_local.memory.runtime import MemoryRuntime

    fast = RefitSettings(steps=4, eval_every=2, patience=3, max_windows=10)
    made = []

    def runtime(profile):
        made.append(
            MemoryRuntime(
                store, frozen.backbone, profile, frozen=frozen, refit_every=2, settings=fast
            )
        )
        return made[-1]

    with running_server(store, frozen.backbone, runtime_factory=runtime) as server:
        a1, _ = _ask(server, _turns("My sister lives in Lyon."))
        _ask(server, _turns("My sister lives in Lyon.", a1, "She is a nurse."))
        (memory,) = made
        # Two user turns: a refit is due and runs in its own thread; requests keep being answered.
        reply, _ = _ask(server, _turns("What about the weather?"), max_tokens=3)
        assert reply is not None
        assert memory.wait_idle(120)
        assert store.list_refits(store.active_profile().id)  # it ran, in the background
