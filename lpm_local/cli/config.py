"""`lpm config get|set|unset|list|edit`: the settings file from the terminal.

Every value is checked before it is written (``lpm_local.settings``), so the file the app reads
is always one it accepts. Key bindings (``keys.<action>``) are also checked against the actions
of the installed terminal UI, found through its entry point like `lpm chat` finds it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from typing import Any

import click

from lpm_local import locations
from lpm_local.cli.base import LpmGroup
from lpm_local.cli.chatting import FRONTENDS_GROUP
from lpm_local.settings import (
    KEYS_PREFIX,
    SettingsError,
    check_value,
    default_value,
    load_settings,
    parse_value,
    read_values,
    save_setting,
    setting_items,
    toml_value,
)


def frontend_key_defaults() -> dict[str, str] | None:
    """The terminal UI's ``{action: default keys}``, or None when no TUI is installed.

    The TUI's module publishes ``KEY_DEFAULTS``; reading it through the entry point keeps the
    library free of any import of the TUI.
    """
    from importlib.metadata import entry_points

    found = entry_points(group=FRONTENDS_GROUP, name="tui")
    if not found:
        return None
    module = importlib.import_module(next(iter(found)).module)
    defaults = getattr(module, "KEY_DEFAULTS", None)
    return dict(defaults) if defaults is not None else None


def _check_against_frontend(key: str, value: Any) -> None:
    """What only the installed TUI knows: its action names and its themes."""
    if key.startswith(KEYS_PREFIX):
        defaults = frontend_key_defaults()
        action = key[len(KEYS_PREFIX) :]
        if defaults is not None and action not in defaults:
            raise SettingsError(
                f"{key}: the terminal UI has no action {action!r}; "
                f"`lpm config list` shows them (keys.{next(iter(defaults), 'new_chat')}, ...)"
            )
    elif key == "theme":
        from textual.theme import BUILTIN_THEMES

        if value not in BUILTIN_THEMES:
            raise SettingsError(
                f"theme = {value!r} is not allowed: use one of {', '.join(BUILTIN_THEMES)}"
            )


@click.group(cls=LpmGroup)
def config() -> None:
    """Show and change your settings (one TOML file; `lpm paths` shows where).

    Keys: model, system_prompt, temperature, top_p, max_reply_tokens, refit_every, theme, and
    keys.<action> for the terminal UI's key bindings. A bad value is refused with what is allowed.
    """


@config.command("get")
@click.argument("key")
def get_command(key: str) -> None:
    """Print the value of KEY in effect (the file's, else the default)."""
    settings = load_settings()
    if key.startswith(KEYS_PREFIX):
        check_value(key, "x")  # the form of the name
        action = key[len(KEYS_PREFIX) :]
        value = settings.keys.get(action) or (frontend_key_defaults() or {}).get(action)
        if value is None:
            raise SettingsError(f"{key}: no such action in the terminal UI")
        click.echo(value)
        return
    default_value(key)  # unknown keys fail here with the list of known ones
    click.echo(getattr(settings, key))


@config.command("set")
@click.argument("key")
@click.argument("value")
def set_command(key: str, value: str) -> None:
    """Set KEY to VALUE (checked first; the file is replaced atomically, mode 0600)."""
    parsed = parse_value(key, value)
    _check_against_frontend(key, parsed)
    saved = save_setting(key, parsed)
    click.echo(f"{key} = {toml_value(saved)}")


@config.command("unset")
@click.argument("key")
def unset_command(key: str) -> None:
    """Remove KEY from the file, so its default applies again."""
    save_setting(key, None)
    shown = default_value(key)
    click.echo(f"{key} is back to its default" + ("" if shown is None else f" ({shown!r})"))


@config.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: key -> value, source.")
def list_command(as_json: bool) -> None:
    """Every setting with its value; `(default)` marks those the file does not set."""
    settings = load_settings()
    set_in_file = read_values()
    rows = [(key, value, key in set_in_file) for key, value in setting_items(settings)]
    defaults = frontend_key_defaults() or {}
    for action in sorted(set(defaults) | set(settings.keys)):
        key = KEYS_PREFIX + action
        rows.append((key, settings.keys.get(action, defaults.get(action)), key in set_in_file))
    if as_json:
        payload = {
            key: {"value": value, "source": "file" if from_file else "default"}
            for key, value, from_file in rows
        }
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    click.echo(f"# {locations.settings_path()}")
    width = max(len(key) for key, _, _ in rows)
    for key, value, from_file in rows:
        click.echo(f"{key:<{width}} = {toml_value(value)}" + ("" if from_file else "  (default)"))


@config.command("edit")
def edit_command() -> None:
    """Open the file in $EDITOR; it is kept only if every value in it is allowed."""
    path = locations.settings_path()
    locations.ensure_private_dir(path.parent)
    draft = path.with_name(path.name + ".edit")
    # A draft left by a rejected edit is reopened, so the user's work is not thrown away.
    if not draft.exists():
        locations.write_private_atomic(draft, path.read_bytes() if path.exists() else _template())
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor and shutil.which("vi") is None:
        raise SettingsError("no editor: set $EDITOR, or use `lpm config set KEY VALUE`")
    click.edit(filename=str(draft), editor=editor)
    try:
        values = read_values(draft)
        for key, value in values.items():
            _check_against_frontend(key, value)
    except SettingsError as error:
        raise SettingsError(f"not saved, your edit is kept in {draft}: {error}") from None
    os.replace(draft, path)
    click.echo(f"saved {path} ({len(values)} settings set)")


def _template() -> bytes:
    """A new file: every setting as a comment with its default, to uncomment and change."""
    from lpm_local.settings import DEFAULTS, to_toml

    lines = [to_toml({})]
    for key, value in setting_items(DEFAULTS):
        lines.append(f"# {key} = {toml_value(value)}\n")
    lines.append('\n# [keys]\n# new_chat = "ctrl+n"\n')
    return "".join(lines).encode("utf-8")


COMMANDS = [config]
