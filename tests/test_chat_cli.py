"""`lpm ask` and `lpm chat --plain` through the real engine on the tiny Qwen3."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lpm_local.cli import main
from lpm_local.storage.instance import InstanceLock
from lpm_local.storage.store import Store


@pytest.fixture
def tiny_model_args(tiny_qwen3_dir):
    return ["--model", str(tiny_qwen3_dir), "--quantize", "none", "--max-new-tokens", "4"]


def _stored_roles() -> list[list[str]]:
    with Store.open() as store:
        profile = store.active_profile()
        return [
            [m.role for m in store.messages(c.id)] for c in store.list_conversations(profile.id)
        ]


def test_ask_streams_an_answer_and_stores_the_turn(tiny_model_args):
    result = CliRunner().invoke(main, ["ask", "hello there", *tiny_model_args])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()  # the tiny random model says *something*
    assert _stored_roles() == [["user", "assistant"]]


def test_temporary_ask_stores_nothing(tiny_model_args):
    result = CliRunner().invoke(main, ["ask", "--temporary", "hello", *tiny_model_args])
    assert result.exit_code == 0, result.output
    assert _stored_roles() == []


def test_empty_question_is_a_usage_error(tiny_model_args):
    result = CliRunner().invoke(main, ["ask", "   ", *tiny_model_args])
    assert result.exit_code == 2
    assert "the question is empty" in result.output


def test_plain_chat_keeps_one_conversation(tiny_model_args):
    result = CliRunner().invoke(
        main, ["chat", "--plain", *tiny_model_args], input="first message\nsecond message\n/quit\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("lpm> ") == 2
    assert _stored_roles() == [["user", "assistant", "user", "assistant"]]


def test_second_interactive_instance_gets_a_clear_message(tiny_model_args):
    with InstanceLock():
        result = CliRunner().invoke(main, ["chat", "--plain", *tiny_model_args], input="/quit\n")
    assert result.exit_code == 2
    assert "lpm is already running" in result.output


def test_unknown_model_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["ask", "hi", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
