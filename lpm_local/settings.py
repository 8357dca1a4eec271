"""The user's settings: one TOML file in the config dir (``lpm paths`` shows where).

Only values the user set are written to the file; every other key keeps the default below, so a
newer lpm with better defaults still applies them. ``tomllib`` reads the file; it is written by
the small writer at the end of this module, which only has to handle the flat value types a
setting may have (text, integer, float) and the one ``[keys]`` table.

Key bindings are named ``keys.<action>`` (for example ``keys.new_chat = "ctrl+n"``). The library
does not know the terminal UI's actions (the TUI builds on the library, not the other way round),
so here a binding is only checked for its form; the TUI reports a binding for an action it does
not have when it starts, and ``lpm config set`` checks the name against the installed TUI.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lpm_local import locations
from lpm_local.chat.encoding import DEFAULT_SYSTEM_PROMPT
from lpm_local.errors import LpmError

KEYS_PREFIX = "keys."
# A Textual key spec: "ctrl+n", "alt+enter", "f2", several separated by commas.
_KEY_SPEC = re.compile(r"^[a-z0-9_]+(\+[a-z0-9_]+)*(,[a-z0-9_]+(\+[a-z0-9_]+)*)*$")
_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_THEME_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_TEXT = 8000  # a system prompt longer than this would crowd out the chat window itself


class SettingsError(LpmError):
    """The settings file, or a value given for it, cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Every setting with its default; ``load_settings`` fills it from the file."""

    # Empty: the registry's choice for this machine (Qwen3-4B with CUDA, the embedded
    # Qwen2.5-Coder-0.5B without), so a default that follows the hardware is not frozen in.
    model: str = ""
    # Sent as the system turn of every chat; short, because every token of it is paid per turn.
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # 0 is greedy: the same question gets the same answer, and small models ramble when sampled.
    temperature: float = 0.0
    # Nucleus cut-off when temperature > 0: 0.95 drops only the long tail of unlikely tokens.
    top_p: float = 0.95
    # Longest reply in tokens: a few paragraphs; `--max-new-tokens` overrides it per command.
    max_reply_tokens: int = 512
    # User turns between background refits: often enough to pick up new facts within a chat,
    # rare enough that refits (minutes on CPU) do not run back to back.
    refit_every: int = 8
    # Textual's default dark theme: readable on every terminal with 256 colours.
    theme: str = "textual-dark"
    # The key `lpm serve` requires from clients when `--api-key` and LPM_API_KEY give none;
    # empty: none (a server that listens beyond loopback then refuses to start).
    server_api_key: str = ""
    # Overrides of the TUI's key bindings, by action name; empty: the TUI's defaults.
    keys: Mapping[str, str] = field(default_factory=dict)


DEFAULTS = Settings()


def _text(limit: int, *, empty_ok: bool = True) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("text")
        if len(value) > limit or (not empty_ok and not value.strip()):
            raise ValueError("text")
        return value

    return check


def _number(kind: type, low: float, high: float, *, low_open: bool = False) -> Callable:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(kind.__name__)
        if kind is int and not isinstance(value, int):
            raise ValueError("int")
        if value != value or value > high or value < low or (low_open and value == low):
            raise ValueError("range")
        return kind(value)

    return check


def _pattern(regex: re.Pattern[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.match(value):
            raise ValueError("form")
        return value

    return check


# key -> (checker, what is allowed, in words for the error line)
_RULES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "model": (_text(1000), "a name from `lpm models`, a local model directory, or '' (default)"),
    "system_prompt": (_text(MAX_TEXT), f"text of at most {MAX_TEXT} characters"),
    "temperature": (_number(float, 0.0, 2.0), "a number from 0 (greedy) to 2"),
    "top_p": (_number(float, 0.0, 1.0, low_open=True), "a number above 0 and at most 1"),
    "max_reply_tokens": (_number(int, 1, 8192), "a whole number from 1 to 8192"),
    "refit_every": (_number(int, 1, 1000), "a whole number of user turns from 1 to 1000"),
    "theme": (_pattern(_THEME_NAME), "a Textual theme name such as textual-dark or nord"),
    "server_api_key": (
        _pattern(re.compile(r"^[\x21-\x7e]{0,200}\Z")),
        "printable ASCII without spaces, at most 200 characters, or '' (none)",
    ),
}
_KEY_RULE = "keys like 'ctrl+n' or 'alt+enter', several separated by commas"


def setting_names() -> list[str]:
    """The keys of the file, in the order ``lpm config list`` shows them."""
    return list(_RULES)


def check_value(key: str, value: Any) -> Any:
    """``value`` for ``key`` if allowed, else ``SettingsError`` naming the key and what is."""
    if key.startswith(KEYS_PREFIX):
        action = key[len(KEYS_PREFIX) :]
        if not _ACTION_NAME.match(action):
            raise SettingsError(f"{key}: not an action name (lower-case letters, digits and _)")
        spec = value.replace(" ", "").lower() if isinstance(value, str) else value
        if not isinstance(spec, str) or not _KEY_SPEC.match(spec):
            raise SettingsError(f"{key} = {_shown(value)} is not allowed: use {_KEY_RULE}")
        return spec
    if key not in _RULES:
        raise SettingsError(
            f"unknown setting {key[:60]!r}: use one of {', '.join(_RULES)}, or keys.<action>"
        )
    checker, allowed = _RULES[key]
    try:
        return checker(value)
    except ValueError:
        raise SettingsError(f"{key} = {_shown(value)} is not allowed: use {allowed}") from None


def parse_value(key: str, text: str) -> Any:
    """A value typed on the command line (always text) as the type ``key`` holds, checked."""
    if key in ("temperature", "top_p"):
        try:
            return check_value(key, float(text))
        except ValueError:
            pass
    elif key in ("max_reply_tokens", "refit_every"):
        try:
            return check_value(key, int(text))
        except ValueError:
            pass
    return check_value(key, text)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _flatten(table: Mapping[str, Any]) -> dict[str, Any]:
    """The file's tables as ``{key: value}`` with ``keys.<action>`` for the [keys] table."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if key == "keys" and isinstance(value, dict):
            for action, spec in value.items():
                flat[KEYS_PREFIX + action] = spec
        else:
            flat[key] = value
    return flat


def read_values(path: Path | None = None) -> dict[str, Any]:
    """What the file sets (checked), as ``{key: value}``; missing file: nothing set."""
    path = path or locations.settings_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise SettingsError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(
            f"{path}: not valid TOML ({error}); fix it with `lpm config edit` or delete it"
        ) from None
    values = {}
    for key, value in _flatten(table).items():
        try:
            values[key] = check_value(key, value)
        except SettingsError as error:
            raise SettingsError(f"{path}: {error}") from None
    return values


def load_settings(path: Path | None = None) -> Settings:
    """The settings in effect: the file's values over the defaults (no file: the defaults).

    A file that cannot be used raises ``SettingsError`` (one line: the file, the key and what is
    allowed); it is never silently ignored, since the user would then chat with settings they
    did not choose.
    """
    values = read_values(path)
    keys = {k[len(KEYS_PREFIX) :]: v for k, v in values.items() if k.startswith(KEYS_PREFIX)}
    plain = {k: v for k, v in values.items() if not k.startswith(KEYS_PREFIX)}
    return replace(DEFAULTS, **plain, keys=keys)


def default_value(key: str) -> Any:
    """The built-in default of ``key`` (None for a key binding: the TUI owns those)."""
    if key.startswith(KEYS_PREFIX):
        return None
    if key not in _RULES:
        check_value(key, None)  # raises the unknown-setting line
    return getattr(DEFAULTS, key)


def save_setting(key: str, value: Any, path: Path | None = None) -> Any:
    """Check ``value`` and write it to the file (atomically, mode 0600); returns the value.

    ``value=None`` removes the key, so it is back at its default.
    """
    path = path or locations.settings_path()
    values = read_values(path)
    if value is None:
        if not key.startswith(KEYS_PREFIX) and key not in _RULES:
            check_value(key, None)  # the unknown-key message
        values.pop(key, None)
    else:
        values[key] = check_value(key, value)
    write_values(values, path)
    return None if value is None else values[key]


def write_values(values: Mapping[str, Any], path: Path | None = None) -> None:
    """Replace the file with ``values`` (checked first): readers see the old file or the new."""
    path = path or locations.settings_path()
    checked = {key: check_value(key, value) for key, value in values.items()}
    locations.ensure_private_dir(path.parent)
    locations.write_private_atomic(path, to_toml(checked).encode("utf-8"))


# -- writing TOML --------------------------------------------------------------------------------

_HEADER = (
    "# lpm-local settings. `lpm config list` shows every key with its default;\n"
    "# `lpm config set KEY VALUE` changes one and checks it first.\n"
)


def to_toml(values: Mapping[str, Any]) -> str:
    """TOML text for flat ``values`` (text, int, float) plus ``keys.<action>`` bindings."""
    lines = [_HEADER]
    plain = [k for k in values if not k.startswith(KEYS_PREFIX)]
    for key in [k for k in _RULES if k in plain]:
        lines.append(f"{key} = {toml_value(values[key])}\n")
    bindings = sorted(k for k in values if k.startswith(KEYS_PREFIX))
    if bindings:
        lines.append("\n[keys]\n")
        for key in bindings:
            lines.append(f"{key[len(KEYS_PREFIX) :]} = {toml_value(values[key])}\n")
    return "".join(lines)


def toml_value(value: Any) -> str:
    """One TOML value: a basic string with every control character escaped, or a number."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"TOML has no place for {value!r} in a setting")
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    raise TypeError(f"a setting is text or a number, not {type(value).__name__}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    # TOML forbids raw control characters in a basic string (and DEL); escape every one.
    if code < 0x20 or code == 0x7F:
        return f"\\u{code:04x}"
    return char


def setting_items(settings: Settings) -> list[tuple[str, Any]]:
    """``(key, value)`` of every plain setting, in file order (for ``lpm config list``)."""
    names = {f.name for f in fields(Settings)}
    return [(key, getattr(settings, key)) for key in _RULES if key in names]
