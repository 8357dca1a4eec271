"""Reading untrusted values: typed field access, text cleaning, timestamps, precise error places.

Every refusal is a ``BadInput`` whose ``where`` names the file and the place inside it, e.g.
``conversations.json: item 3 (conversation 'Trip'), mapping['ab12'].message.content.parts[0]``,
so the one line the CLI prints says exactly where to look.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from lpm_local.errors import BadInput

# NUL and other C0/C1 controls carry no conversational meaning and can drive a terminal
# (ESC sequences); lone surrogates cannot be stored as UTF-8. Tab, LF and CR are kept.
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMERIC = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")
# 9999-12-31T23:59:59Z: the last instant datetime can hold.
_MAX_EPOCH_SECONDS = 253_402_300_799


def clean_text(text: str) -> str:
    """``text`` with NUL/control characters dropped and lone surrogates replaced by U+FFFD."""
    if _UNSAFE_CHARS.search(text) is None:
        return text
    return _UNSAFE_CHARS.sub(_replacement, text)


def _replacement(match: re.Match[str]) -> str:
    return "\ufffd" if "\ud800" <= match.group() <= "\udfff" else ""


def short(text: str, limit: int = 40) -> str:
    """A cleaned, single-line, truncated rendering of untrusted text for an error message."""
    flat = " ".join(clean_text(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"  # an SQLite BLOB
    return type(value).__name__


# A path to a JSON value: a plain string, or (base, key) pairs nested to any depth. Building
# one is a tuple allocation; it is rendered (``mapping['ab12'].message``) only for an error.
JsonPath = str | tuple


def key_path(base: JsonPath, key: str | int) -> JsonPath:
    return (base, key)


def render_path(path: JsonPath) -> str:
    """``base.key``, ``base['odd key']`` or ``base[3]``: a readable path to a JSON value."""
    if isinstance(path, str):
        return path
    base, key = path
    text = render_path(base)
    if isinstance(key, int):
        return f"{text}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{text}.{key}" if text else key
    return f"{text}[{short(key)!r}]"


@dataclass(frozen=True)
class Place:
    """Where a value sits: the file, the record in it, and an optional human label."""

    file: str
    record: str | None = None  # "item 3", "line 7", "chat 12"
    label: str | None = None  # "conversation 'Trip'"

    def where(self, path: JsonPath = "") -> str:
        head = self.record or ""
        if self.label:
            head = f"{head} ({self.label})" if head else self.label
        inner = ", ".join(p for p in (head, render_path(path)) if p)
        return f"{self.file}: {inner}" if inner else self.file

    def error(self, path: JsonPath, what: str, hint: str | None = None) -> BadInput:
        return BadInput(what, where=self.where(path), hint=hint)

    def titled(self, kind: str, title: str | None) -> Place:
        return replace(self, label=f"{kind} {short(title)!r}") if title else self


def expect(
    value: Any, kind: type | tuple[type, ...], place: Place, path: JsonPath, what: str
) -> Any:
    """``value`` if it is of ``kind`` (bools are never numbers), else a BadInput."""
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
    if not ok:
        raise place.error(path, f"expected {what}, got {type_name(value)}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "list": ((list,), "a list"),
    "dict": ((dict,), "an object"),
    "number": ((int, float), "a number"),
    "bool": ((bool,), "a boolean"),
    "id": ((str, int), "a string or a number"),
}


def get(
    obj: dict, key: str, kind: str, place: Place, path: JsonPath, *, required: bool = False
) -> Any:
    """``obj[key]`` checked against ``kind`` ('str', 'list', ...); None when absent or null
    unless ``required``."""
    value = obj.get(key)
    types, what = _KINDS[kind]
    if type(value) in types:  # the common case, checked first; bool is never a number here
        return value
    if value is None:
        if required:
            if key not in obj:
                raise place.error(path, f"missing field {key!r}")
            raise place.error(key_path(path, key), f"expected {what}, got null")
        return None
    return expect(value, types, place, key_path(path, key), what)


def text_value(value: str, place: Place, path: JsonPath, max_chars: int) -> str:
    """Cleaned ``value``, refused when longer than ``max_chars``."""
    if len(value) > max_chars:
        raise place.error(
            path,
            f"message of {len(value):,} characters is longer than the limit of {max_chars:,}",
            hint="raise ImportLimits.max_message_chars if this file is trusted",
        )
    return clean_text(value)


def ref_part(value: str | int) -> str:
    """An id made safe to embed in a ``source_ref``."""
    return clean_text(str(value))[:200]


def iso_utc(value: Any, place: Place, path: JsonPath) -> str | None:
    """A timestamp (epoch s/ms/us/ns number, numeric string or ISO 8601 string) as ISO UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise place.error(path, f"expected a timestamp, got {type_name(value)}")
    if isinstance(value, str):
        return _iso_from_string(value, place, path)
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise place.error(path, f"timestamp {value!r} is out of range")
    # Exports mix seconds (ChatGPT), milliseconds (JS) and nanoseconds; the magnitude tells:
    # 1e11 seconds is the year 5138, while milliseconds pass 1e11 in 1973.
    for threshold, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
        if seconds >= threshold:
            seconds /= scale
            break
    if seconds > _MAX_EPOCH_SECONDS:
        raise place.error(path, f"timestamp {value!r} is out of range")
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


def _iso_from_string(text: str, place: Place, path: JsonPath) -> str:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise place.error(path, f"{short(text)!r} is not an ISO 8601 date") from None
    if moment.tzinfo is None:
        # Apps that store naive datetimes (elia, llm) store them in UTC.
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError):
        raise place.error(path, f"{short(text)!r} is out of range") from None


def join_text_parts(parts: list, place: Place, path: JsonPath, text_types: frozenset[str]) -> str:
    """The text of an OpenAI-style content list: strings and ``{type: text, text}`` blocks;
    images, audio, files and tool blocks are skipped."""
    texts: list[str] = []
    for index, part in enumerate(parts):
        where = key_path(path, index)
        if isinstance(part, str):
            texts.append(part)
            continue
        block = expect(part, dict, place, where, "a string or an object")
        kind = get(block, "type", "str", place, where)
        if kind in text_types:
            texts.append(get(block, "text", "str", place, where, required=True))
    return "\n".join(t for t in texts if t)
