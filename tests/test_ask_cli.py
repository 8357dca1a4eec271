"""`lpm ask` for scripts: -c/--chat, stdin, -s, and the settings reaching the model."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lpm_local.chat.engine import ChatEngine
from lpm_local.cli import main
from lpm_local.settings import save_setting
from lpm_local.storage.store import Store


@pytest.fixture
def tiny(tiny_qwen3_dir):
    return ["--model", str(tiny_qwen3_dir), "--quantize", "none", "--max-new-tokens", "3"]


@pytest.fixture
def seen(monkeypatch):
    """What ``ChatEngine.generate`` was called with, per call: the ids and the sampling."""
    calls: list[dict] = []
    original = ChatEngine.generate

    def spy(self, ids, prefix=None, **kwargs):
        calls.append({"ids": ids[0].tolist(), "tokenizer": self.backbone.tokenizer, **kwargs})
        return original(self, ids, prefix, **kwargs)

    monkeypatch.setattr(ChatEngine, "generate", spy)
    return calls


def ask(*args: str, input: str | None = None):
    result = CliRunner().invoke(main, ["ask", *args], input=input)
    assert result.exit_code == 0, result.output
    return result


def chats() -> list[list[tuple[str, str]]]:
    with Store.open() as store:
        profile = store.active_profile()
        return [
            [(m.role, m.content) for m in store.messages(c.id)]
            for c in sorted(store.list_conversations(profile.id), key=lambda c: c.id)
        ]


def test_continue_and_chat_id_go_on_with_a_stored_chat(tiny):
    first = ask("first question", *tiny)
    assert "chat #1" in first.stderr
    ask("-c", "second question", *tiny)
    ask("third, new chat", *tiny)
    ask("--chat", "1", "fourth question", *tiny)
    users = [[text for role, text in chat if role == "user"] for chat in chats()]
    assert users == [["first question", "second question", "fourth question"], ["third, new chat"]]


def test_piped_stdin_comes_before_the_instruction(tiny):
    ask("summarise", *tiny, input="line one\nline two\n")
    ask("-", *tiny, input="only from stdin\n")
    users = [chat[0][1] for chat in chats()]
    assert users == ["line one\nline two\n\nsummarise", "only from stdin"]


def test_nothing_to_ask_is_a_usage_error(tiny):
    result = CliRunner().invoke(main, ["ask", *tiny], input="")
    assert result.exit_code == 2 and "the question is empty" in result.output


def test_conflicting_options_are_refused(tiny):
    for args in (["-c", "--chat", "1", "x"], ["--temporary", "-c", "x"]):
        result = CliRunner().invoke(main, ["ask", *args, *tiny])
        assert result.exit_code == 2, result.output


def test_an_unknown_chat_is_one_line(tiny):
    result = CliRunner().invoke(main, ["ask", "--chat", "77", "x", *tiny])
    assert result.exit_code == 2 and "conversation #77 does not exist" in result.output


def test_sampling_and_length_settings_reach_generate(tiny_qwen3_dir, seen):
    save_setting("temperature", 0.7)
    save_setting("top_p", 0.5)
    save_setting("max_reply_tokens", 2)
    ask("hello", "--model", str(tiny_qwen3_dir), "--quantize", "none")
    assert (seen[0]["temperature"], seen[0]["top_p"], seen[0]["max_new_tokens"]) == (0.7, 0.5, 2)


@pytest.mark.parametrize("where", ["setting", "option"])
def test_the_configured_system_prompt_is_in_the_ids_the_model_receives(tiny, seen, where):
    prompt = "You answer only in haiku about otters."
    if where == "setting":
        save_setting("system_prompt", prompt)
        ask("hello", *tiny)
    else:
        ask("-s", prompt, "hello", *tiny)
    tokenizer = seen[0]["tokenizer"]
    assert prompt in tokenizer.decode(seen[0]["ids"])


def test_open_assistant_takes_the_default_model_and_refit_interval_from_the_settings(
    tiny_qwen3_dir,
):
    from lpm_local.chat.assistant import open_assistant

    save_setting("model", str(tiny_qwen3_dir))
    save_setting("refit_every", 3)
    save_setting("system_prompt", "Be brief.")
    with open_assistant(None, quantize="none", background_refits=False) as assistant:
        assert assistant.backbone.name == str(tiny_qwen3_dir)  # a local dir is named by its path
        assert assistant.memory.refit_every == 3
        assert assistant.new_session().system_prompt == "Be brief."
        assert assistant.new_session(system_prompt="Other.").system_prompt == "Other."
