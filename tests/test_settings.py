"""The settings file: defaults, checks with one-line errors, atomic private writes, `lpm config`."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lpm_local import locations
from lpm_local.cli import main
from lpm_local.settings import (
    DEFAULTS,
    Settings,
    SettingsError,
    load_settings,
    save_setting,
    to_toml,
    toml_value,
)


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0]


def test_missing_file_means_the_defaults():
    assert not locations.settings_path().exists()
    assert load_settings() == Settings()


def test_a_saved_value_is_read_back_and_the_file_is_private():
    save_setting("temperature", 0.7)
    save_setting("system_prompt", 'Say "hi".\nThen\tstop.\x07')
    save_setting("keys.new_chat", "Ctrl+Alt+N")
    loaded = load_settings()
    assert loaded.temperature == 0.7
    assert loaded.system_prompt == 'Say "hi".\nThen\tstop.\x07'
    assert loaded.keys == {"new_chat": "ctrl+alt+n"}
    assert loaded.top_p == DEFAULTS.top_p  # untouched keys keep their default
    path = locations.settings_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left


def test_unset_returns_a_key_to_its_default():
    save_setting("refit_every", 3)
    save_setting("refit_every", None)
    assert load_settings().refit_every == DEFAULTS.refit_every


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("temperature", 2.5, "from 0 (greedy) to 2"),
        ("top_p", 0.0, "above 0 and at most 1"),
        ("max_reply_tokens", 0, "from 1 to 8192"),
        ("max_reply_tokens", 1.5, "whole number"),
        ("refit_every", True, "whole number"),
        ("theme", "Not A Theme!", "theme name"),
        ("keys.new_chat", "ctrl+", "keys like"),
        ("colour", "red", "use one of model, system_prompt"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key_and_what_is_allowed(key, value, allowed):
    with pytest.raises(SettingsError) as error:
        save_setting(key, value)
    assert key in str(error.value) and allowed in str(error.value)
    assert not locations.settings_path().exists()  # nothing half-written


def test_a_broken_file_is_one_line_and_exit_2():
    path = locations.settings_path()
    locations.ensure_private_dir(path.parent)
    path.write_text("temperature = [oops\n")
    one_line_error(run("config", "list"), "config.toml", "not valid TOML")
    path.write_text("temperature = 9\n")
    one_line_error(run("config", "get", "temperature"), "temperature = 9", "from 0 (greedy) to 2")
    one_line_error(run("ask", "hi"), "temperature = 9")  # before any model is loaded


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_any_text_round_trips_through_the_writer(text):
    assert tomllib.loads(f"v = {toml_value(text)}")["v"] == text


@given(st.floats(min_value=0.0, max_value=2.0))
def test_floats_round_trip(value):
    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


def test_written_file_is_valid_toml_with_the_keys_table():
    text = to_toml({"theme": "nord", "keys.quit": "ctrl+q", "temperature": 0.0})
    assert tomllib.loads(text) == {"theme": "nord", "temperature": 0.0, "keys": {"quit": "ctrl+q"}}


def test_config_cli_set_get_list_unset():
    assert run("config", "set", "temperature", "0.4").output == "temperature = 0.4\n"
    assert run("config", "get", "temperature").output == "0.4\n"
    listed = run("config", "list")
    assert listed.exit_code == 0
    assert listed_values(listed.output)["temperature"] == "0.4"
    assert listed_values(listed.output)["top_p"] == "0.95  (default)"
    # The TUI's default keys, found through its entry point.
    assert listed_values(listed.output)["keys.new_chat"] == '"ctrl+n"  (default)'
    assert run("config", "unset", "temperature").exit_code == 0
    assert listed_values(run("config", "list").output)["temperature"] == "0.0  (default)"


def listed_values(output: str) -> dict[str, str]:
    rows = [line.split(" = ", 1) for line in output.splitlines() if not line.startswith("#")]
    return {key.strip(): value for key, value in rows}


def test_config_cli_refuses_unknown_actions_and_themes():
    one_line_error(run("config", "set", "keys.fly_away", "ctrl+y"), "keys.fly_away", "no action")
    one_line_error(run("config", "set", "theme", "sunset"), "theme", "textual-dark")
    one_line_error(run("config", "set", "temperature", "warm"), "temperature", "from 0")
    assert run("config", "set", "theme", "nord").exit_code == 0


def test_config_edit_keeps_a_valid_edit_and_refuses_a_bad_one(monkeypatch, tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "$LPM_TEST_EDIT" > "$1"\n')
    editor.chmod(0o700)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.setenv("LPM_TEST_EDIT", "refit_every = 4\\n")
    result = run("config", "edit")
    assert result.exit_code == 0, result.output
    assert load_settings().refit_every == 4
    monkeypatch.setenv("LPM_TEST_EDIT", "refit_every = 0\\n")
    one_line_error(run("config", "edit"), "not saved", "refit_every")
    assert load_settings().refit_every == 4  # the good file stays
    assert os.path.exists(str(locations.settings_path()) + ".edit")  # the edit is kept


def test_paths_shows_the_settings_file():
    assert str(locations.settings_path()) in run("paths").output
