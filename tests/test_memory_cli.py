"""`lpm memory ...` and `lpm forget` through click, on a real store and the tiny Qwen3."""

from __future__ import annotations

import json

import click
import pytest
import torch
from click.testing import CliRunner

from lpm_local.cli.base import LpmGroup
from lpm_local.cli.forget import COMMANDS as FORGET_COMMANDS
from lpm_local.cli.memory import COMMANDS, memory
from lpm_local.memory import requests
from lpm_local.memory.inspection import record_reply_attention
from lpm_local.memory.refit import RefitSettings
from lpm_local.memory.slots import slots_from_bytes
from lpm_local.storage.records import NewMessage
from lpm_local.storage.store import Store


@click.group(cls=LpmGroup)
def cli() -> None:
    """The commands under test, mounted as `lpm` mounts them."""


for _command in (*COMMANDS, *FORGET_COMMANDS):
    cli.add_command(_command)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def seed_history(n_convs: int = 2, n_exchanges: int = 4) -> list[int]:
    with Store.open() as store:
        profile = store.active_profile()
        ids = []
        for c in range(n_convs):
            conv = store.create_conversation(profile.id, f"chat {c}")
            store.add_messages(
                conv.id,
                [
                    NewMessage(r, t)
                    for i in range(n_exchanges)
                    for r, t in (
                        ("user", f"I grow tomatoes, note {c}.{i}."),
                        ("assistant", "Lovely, noted."),
                    )
                ],
            )
            ids.append(conv.id)
        return ids


def fake_versions(n: int) -> list[int]:
    with Store.open() as store:
        profile = store.active_profile()
        return [
            store.add_memory_version(
                profile.id,
                tensors=bytes([i + 1]) * 64,
                backbone="x",
                projector_sha256=None,
                config_json=None,
                heldout_loss=1.0 / (i + 1),
                reason=f"refit {i}",
            ).id
            for i in range(n)
        ]


def one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and pattern in lines[0], lines


def _paths(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _paths(command, (*prefix, name))


@pytest.mark.parametrize("path", list(_paths(cli)), ids=" ".join)
def test_every_command_has_help(path):
    result = run(*path, "--help")
    assert result.exit_code == 0 and "Usage: " in result.output
    command = cli
    for name in path:
        command = command.commands[name]
    assert command.get_short_help_str().strip()


def test_the_group_is_called_memory_and_has_its_commands():
    assert memory.name == "memory"
    assert {"status", "refit", "history", "rollback", "on", "off", "show"} <= set(memory.commands)


def test_status_of_a_fresh_profile():
    result = run("memory", "status")
    assert result.exit_code == 0, result.output
    assert "memory      on" in result.output
    assert "none yet" in result.output and "last refit  never" in result.output
    assert "running     no" in result.output


def test_off_and_on_switch_and_are_audited():
    assert "memory is off" in run("memory", "off").output
    assert "memory      off" in run("memory", "status").output
    assert "memory is on" in run("memory", "on").output
    with Store.open() as store:
        profile = store.active_profile()
        assert profile.memory_enabled
        assert [a.action for a in store.list_audit(profile.id)] == ["memory.off", "memory.on"]


def test_status_shows_turns_since_and_requests():
    seed_history(1, 3)
    with Store.open() as store:
        requests.request_refit(store, store.active_profile().id, "import of x.json")
    out = run("memory", "status").output
    assert "3 new user turns" in out and "import of x.json" in out


def test_history_marks_the_current_version_and_rollback_moves_it():
    first, second = fake_versions(2)
    out = run("memory", "history").output
    current = [line for line in out.splitlines() if line.startswith("*")]
    assert len(current) == 1 and f"#{second}" in current[0]
    result = run("memory", "rollback", f"#{first}")
    assert result.exit_code == 0 and f"#{first} is current (was #{second})" in result.output
    with Store.open() as store:
        assert store.active_profile().current_version_id == first


def test_rollback_errors_are_one_line():
    fake_versions(1)
    one_line_error(run("memory", "rollback", "abc"), "not a version id")
    one_line_error(run("memory", "rollback", "99"), "does not exist")
    one_line_error(run("memory", "status", "--profile", "nobody"), "does not exist")


def test_refit_in_the_foreground_then_show(tiny_qwen3_dir):
    seed_history()
    with Store.open() as store:
        requests.request_refit(store, store.active_profile().id, "import of x.json")
    result = run("memory", "refit", "--model", str(tiny_qwen3_dir), "--steps", "4")
    assert result.exit_code == 0, result.output
    # The refit served the import's request: status no longer shows it as pending.
    assert "requested   no" in run("memory", "status").output
    assert "held-out loss" in result.output and "->" in result.output
    assert ("written" in result.output) or ("memory unchanged" in result.output)
    with Store.open() as store:
        profile = store.active_profile()
        refits = store.list_refits(profile.id)
        assert len(refits) == 1 and refits[0].status in ("committed", "no_improvement")
        if profile.current_version_id is None:
            return
        conv = store.create_conversation(profile.id, "inspect me")
        store.add_message(conv.id, "user", "hi")
        reply = store.add_message(conv.id, "assistant", "hello")
        shape = store.current_memory_version(profile.id)
        config = slots_from_bytes(shape.tensors, where="test")[1]
        attention = torch.softmax(
            torch.randn(config.heads, config.n_soft_tokens, config.n_slots), dim=-1
        )
        record_reply_attention(store, reply.id, profile.current_version_id, attention)
    # No --model: the backbone the memory was fitted for (the tiny model's directory).
    shown = run("memory", "show", "--reply", str(reply.id))
    assert shown.exit_code == 0, shown.output
    # The tiny model's default memory is a routed bank: listed by group, mapped by group.
    assert config.routed and shown.output.count("group ") >= config.route_groups
    assert "usage" in shown.output and f"{config.route_groups - 1:>2}\n" in shown.output
    assert "mass%" in shown.output and any(b in shown.output for b in "▁▂▃▄▅▆▇█")
    one_line_error(run("memory", "show", "--reply", "99999"), "no memory attention")
    # What the refits learned: the bank's rank-8 change, not its 288 x 64 numbers.
    rank = RefitSettings().change_rank
    learned = (config.n_slots + config.slot_dim) * rank
    stored = config.n_slots * config.slot_dim
    status = run("memory", "status").output
    assert f"learned     {learned:,} numbers (a rank-{rank} change of the bank's {stored:,})" in (
        status
    )
    # How much of the bank the history filled: the groups whose key row is not all zero.
    slots = slots_from_bytes(shape.tensors, where="test")[0]
    filed = int((slots[:: config.group_tokens + 1].abs().sum(dim=-1) > 0).sum())
    assert 0 < filed <= config.route_groups
    assert f"bank        {filed} of {config.route_groups} groups filed (" in status
    assert json.loads(run("memory", "status", "--json").output)["learned"] == {
        "stored_numbers": stored,
        "learned_numbers": learned,
        "change_rank": rank,
        "groups": config.route_groups,
        "filed_groups": filed,
    }


def test_status_says_when_the_current_version_cannot_be_read():
    fake_versions(1)  # bytes that are no safetensors blob
    status = run("memory", "status")
    assert status.exit_code == 0, status.output
    assert "learned     unreadable (" in status.output


def test_forget_later_excludes_rolls_back_and_requests_a_refit():
    (conv,) = seed_history(1, 2)
    with Store.open() as store:
        profile = store.active_profile()
        store.add_memory_version(
            profile.id,
            tensors=b"x" * 64,
            backbone="x",
            projector_sha256=None,
            config_json=None,
            trained_through_message_id=store.last_message_id(profile.id),
        )
    result = run("forget", str(conv), "--yes", "--later")
    assert result.exit_code == 0, result.output
    assert f"conversation #{conv} 'chat 0' is excluded" in result.output
    assert "the memory is empty until the next refit" in result.output
    with Store.open() as store:
        profile = store.active_profile()
        assert store.get_conversation(conv).exclude_from_memory
        assert store.list_memory_versions(profile.id) == []
        assert requests.pending_refit(store, profile.id)["reason"] == "forget"


def test_forget_asks_first_and_a_no_changes_nothing():
    (conv,) = seed_history(1, 1)
    result = run("forget", str(conv), input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    with Store.open() as store:
        assert not store.get_conversation(conv).exclude_from_memory


def test_forget_refits_the_rest_in_the_foreground(tiny_qwen3_dir):
    _keep, secret = seed_history(2, 4)
    result = run("forget", str(secret), "--yes", "--model", str(tiny_qwen3_dir))
    assert result.exit_code == 0, result.output
    assert "refit of the remaining history:" in result.output
    with Store.open() as store:
        profile = store.active_profile()
        for version in store.list_memory_versions(profile.id):
            assert f'"{secret}"' not in (version.config_json or "")


def test_forget_of_an_unknown_conversation_is_one_line():
    one_line_error(run("forget", "424242", "--yes"), "does not exist")
