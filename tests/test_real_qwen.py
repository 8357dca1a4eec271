"""The CPU default, Qwen2.5-Coder-0.5B-Instruct, for real: its six parts assembled, verified and
converted once into ``<repo>/.lpm-test-home`` (shared with test_real_model.py; first run ~2-5
min on 2 cores, later loads seconds), then: facts told earlier in a chat are answered by
generation, and the configured system prompt reaches the model.

All slow (~2-3 min once the cache exists): the 0.5B model decodes ~5-10 tokens/s on a small CPU.
The persona below is this test's own; ``in_context_recall`` is also what the README's recall
figures for both embedded backbones were measured with.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch

from lpm_local.backbones.loader import load_backbone
from lpm_local.backbones.registry import get_spec
from lpm_local.chat.encoding import encode_text
from lpm_local.chat.engine import ChatEngine
from lpm_local.chat.session import ChatSession

SPEC = get_spec("qwen2.5-coder-0.5b")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realmodel,
    pytest.mark.skipif(
        any(importlib.util.find_spec(p.module) is None for p in SPEC.gguf_parts),
        reason=f"the qwen2.5-coder-0.5b parts are not installed ({SPEC.install_hint})",
    ),
]

MODEL_HOME = Path(
    os.environ.get("LPM_TEST_MODEL_HOME", Path(__file__).resolve().parents[1] / ".lpm-test-home")
)

# One message of facts, then questions in the same chat. Each answer is checked for any of its
# keys (lower-cased substring), so a correct sentence in any wording counts.
FACTS = (
    "Some things about me, please remember them. My name is Ines and I work as a night-shift "
    "baker. My daughter is called Mirela. I drive an old green Volvo. I am learning Icelandic "
    "in the evenings. My favourite book is The Master and Margarita. I live on a houseboat "
    "named Wren. In October I will run a marathon in Lisbon."
)
QUESTIONS = [
    ("What is my job?", ("baker", "bakery", "baking")),
    ("What is my daughter's name?", ("mirela",)),
    ("What car do I drive?", ("volvo",)),
    ("Which language am I learning?", ("icelandic",)),
    ("What is my favourite book?", ("master and margarita",)),
    ("What is the name of my houseboat?", ("wren",)),
    ("In which city will I run a marathon?", ("lisbon",)),
    ("In which month is my marathon?", ("october",)),
]
# Measured with this persona (greedy, 32 new tokens, see the README): Qwen2.5-Coder-0.5B 8 of 8,
# SmolLM2-135M 5 of 8. Two misses are allowed, so a harmless wording change does not
# fail CI.
MIN_RECALLED = 6


def in_context_recall(backbone, *, max_new_tokens: int = 32) -> list[tuple[str, str, bool]]:
    """(question, reply, answered) for each question, asked after ``FACTS`` in one chat."""
    session = ChatSession(engine=ChatEngine(backbone), temporary=True)
    for _ in session.send(FACTS, max_new_tokens=48):
        pass
    results = []
    for question, keys in QUESTIONS:
        reply = "".join(session.send(question, max_new_tokens=max_new_tokens))
        results.append((question, reply, any(k in reply.lower() for k in keys)))
    return results


@pytest.fixture(scope="module")
def qwen():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LPM_HOME", str(MODEL_HOME))
        started = time.perf_counter()
        backbone = load_backbone("qwen2.5-coder-0.5b", device="cpu")
        backbone.load_seconds = time.perf_counter() - started  # first run: includes conversion
    return backbone


def test_loads_the_verified_conversion(qwen):
    assert (qwen.name, qwen.hidden_size, qwen.context_window, qwen.dtype) == (
        "qwen2.5-coder-0.5b",
        896,
        32768,
        torch.float32,
    )
    print(f"\nqwen2.5-coder-0.5b load {qwen.load_seconds:.1f}s")


def test_facts_told_earlier_in_the_chat_are_answered(qwen):
    results = in_context_recall(qwen)
    for question, reply, answered in results:
        print(f"\n{'OK  ' if answered else 'MISS'} {question} -> {reply!r}")
    recalled = sum(answered for _, _, answered in results)
    assert recalled >= MIN_RECALLED, f"{recalled} of {len(results)} answered from the context"


def _contains(ids: list[int], needle: list[int]) -> bool:
    return any(ids[k : k + len(needle)] == needle for k in range(len(ids) - len(needle) + 1))


def test_the_configured_system_prompt_reaches_the_model(qwen):
    """On the ids the model embeds (a hook on its embedding layer, so whatever path the chat
    takes to the model is covered), and by generation: the name given there is the answer."""
    system = "You are Quill, a terse assistant. Your name is Quill."
    seen: list[list[int]] = []
    embeddings = qwen.model.get_input_embeddings()
    hook = embeddings.register_forward_pre_hook(
        lambda module, args: seen.append(args[0][0].tolist())
    )
    try:
        session = ChatSession(engine=ChatEngine(qwen), temporary=True, system_prompt=system)
        reply = "".join(session.send("What is your name?", max_new_tokens=12))
    finally:
        hook.remove()
    prompt = seen[0]  # the first embedding call is the whole prompt; later ones are new tokens
    assert _contains(prompt, encode_text(qwen.tokenizer, system))
    # Not the template's own default system turn ("You are Qwen, created by Alibaba Cloud...").
    assert not _contains(prompt, encode_text(qwen.tokenizer, "created by Alibaba Cloud"))
    assert "quill" in reply.lower(), reply
