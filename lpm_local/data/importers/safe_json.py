"""Streaming JSON records out of a text stream, strictly and with bounded memory.

The standard library has no streaming parser, so this module streams the *items* of a top-level
array (or the objects of a JSONL file, or a single document) and parses each item with
``json.JSONDecoder.raw_decode`` over a growing buffer: C speed per item, and memory bounded by
the largest item plus one chunk, never by the file. The decoder refuses what Python's ``json``
would accept but a chat export never contains: NaN/Infinity, numbers out of float range,
duplicate keys. Nesting deeper than ``ImportLimits.max_json_depth`` is refused, and the C
scanner's own RecursionError on absurd nesting becomes a ``BadInput`` too. An item that outgrows
the buffer is checked, before it is parsed, against ``max_record_chars`` and an estimate of the
memory its Python objects would take (``max_record_memory``).

A truncated item and a malformed one look alike to ``raw_decode`` until more text arrives, so
an error close to the end of the buffer (or an unterminated string) reads more and retries; the
buffer at least doubles between retries, which keeps the work linear in the item size.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lpm_local.errors import BadInput

from .base import ImportLimits
from .fields import Place, short
from .textio import TextReader

_WS = re.compile(r"[ \t\n\r]*")
_COMPACT_CHARS = 1 << 20
_ESTIMATE_FROM = 4 << 20  # below 4 MiB of text even the worst case stays ~100 MB
# raw_decode errors this close to the end of the buffer may just be a truncated item.
_TAIL = 64
_LIMIT_HINT = "raise ImportLimits.{} if this file is trusted"

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_DELTA = [0] * 256
for _c in b"[{":
    _DELTA[_c] = 1
for _c in b"]}":
    _DELTA[_c] = -1


class _Reject(ValueError):
    """Raised from decoder hooks; turned into a BadInput with the record's place."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Reject(f"duplicate key {short(key)!r} in a JSON object")
            seen.add(key)
    return obj


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject(f"number {short(text)} is out of range")
    return value


def _constant(name: str) -> Any:
    raise _Reject(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=_float, parse_constant=_constant, strict=True
)


def _memory_estimate(text: str, start: int) -> int:
    """Upper estimate of the bytes of Python objects parsing ``text[start:]`` would create:
    every value follows a ',', ':', '[' or '{' and costs at most ~80 bytes, plus the text."""
    values = sum(text.count(c, start) for c in ",:[{")
    return 80 * values + (len(text) - start)


def json_depth(text: str) -> int:
    """Maximum nesting depth of the JSON ``text`` (brackets inside strings do not count)."""
    data = text.encode("utf-8", "surrogatepass")
    # Drop escaped backslashes, then escaped quotes (left to right, as JSON reads them), so
    # that \" never looks like a string boundary.
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(data.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    return max(itertools.accumulate(map(_DELTA.__getitem__, outside_strings)), default=0)


@dataclass(frozen=True)
class JsonRecord:
    """One conversation-sized JSON value and where it came from."""

    value: Any
    record: str  # "item 3" (array) or "line 7" (JSONL, a single document), 1-based
    index: int


def iter_records(reader: TextReader, limits: ImportLimits) -> Iterator[JsonRecord]:
    """The records of a JSON array, or of a stream of objects (JSONL, or one document)."""
    stream = _Stream(reader, limits)
    first = stream.skip_ws()
    if first == "[":
        yield from stream.array_items()
    elif first == "{":
        yield from stream.object_stream()
    elif first == "":
        raise BadInput("the file holds no JSON data", where=reader.name)
    else:
        raise stream.error(None, "not JSON: expected '[' or '{' at the start")


class _Stream:
    """A text buffer over a ``TextReader``, counting lines as it goes for error messages."""

    def __init__(self, reader: TextReader, limits: ImportLimits):
        self.reader, self.name, self.limits = reader, reader.name, limits
        self.buf, self.pos, self.eof = "", 0, False
        # Line number of buf[_counted]; advanced lazily (recounting from 0 would be quadratic).
        self._line, self._counted = 1, 0

    def fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.reader.read_chunk()
        if not chunk:
            self.eof = True
            return False
        if self.pos > _COMPACT_CHARS:
            self.line_of(self.pos)
            self.buf, self._counted, self.pos = self.buf[self.pos :], 0, 0
        self.buf += chunk
        return True

    def line_of(self, pos: int) -> int:
        if pos < self._counted:  # only on error paths
            return self._line - self.buf.count("\n", pos, self._counted)
        self._line += self.buf.count("\n", self._counted, pos)
        self._counted = pos
        return self._line

    def skip_ws(self) -> str:
        """Advance past whitespace; the next character, or '' at end of input."""
        if self.pos < len(self.buf) and self.buf[self.pos] not in " \t\n\r":
            return self.buf[self.pos]  # the common case: no whitespace between items
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def at(self, pos: int) -> str:
        column = pos - self.buf.rfind("\n", 0, pos)
        return f"line {self.line_of(pos):,} column {column:,}"

    def error(self, record: str | None, what: str, hint: str | None = None) -> BadInput:
        return Place(self.name, record).error("", what, hint)

    def _grow(self, record: str) -> bool:
        """Read until the pending item's text has at least doubled; False at end of input.

        Only items that outgrow the buffer come here, so this is where their size and the
        memory their objects would take are checked, before ``raw_decode`` builds them.
        """
        target = 2 * max(len(self.buf) - self.pos, 1 << 16)
        grew = False
        while len(self.buf) - self.pos < target and self.fill():
            grew = True
        pending = len(self.buf) - self.pos
        if pending > self.limits.max_record_chars:
            raise self.error(
                record,
                f"larger than the limit of {self.limits.max_record_chars:,} characters",
                _LIMIT_HINT.format("max_record_chars"),
            )
        memory = _memory_estimate(self.buf, self.pos) if pending > _ESTIMATE_FROM else 0
        if memory > self.limits.max_record_memory:
            raise self.error(
                record,
                "too many JSON values in one record to hold in memory",
                _LIMIT_HINT.format("max_record_memory"),
            )
        return grew

    def decode_value(self, record: str) -> Any:
        """Parse the JSON value starting at ``pos``; leaves ``pos`` just after it."""
        while True:
            start = self.pos
            try:
                value, end = _DECODER.raw_decode(self.buf, start)
            except _Reject as exc:
                raise self.error(record, str(exc)) from None
            except RecursionError:
                raise self._too_deep(record) from None
            except json.JSONDecodeError as exc:
                unterminated = exc.msg.startswith("Unterminated string")
                if (unterminated or exc.pos >= len(self.buf) - _TAIL) and self._grow(record):
                    continue
                if unterminated or exc.pos >= len(self.buf):
                    raise self.error(
                        record, "the text ends in the middle of a JSON value"
                    ) from None
                raise self.error(record, f"invalid JSON at {self.at(exc.pos)}: {exc.msg}") from None
            except ValueError:  # int() refuses numbers of more than 4300 digits
                raise self.error(record, "a number with too many digits") from None
            # A number or literal may go on in the next chunk; a number even when the chunk
            # ends a few characters after what was parsed ("1.5e" decodes as 1.5, leaving "e").
            cut_number = type(value) in (int, float) and end >= len(self.buf) - 3
            if (end == len(self.buf) or cut_number) and self._grow(record):
                continue
            if end - start > 2 * self.limits.max_json_depth and (
                json_depth(self.buf[start:end]) > self.limits.max_json_depth
            ):
                raise self._too_deep(record)
            if end - start > self.limits.max_record_chars:
                # Items that fit in the buffer never went through ``_grow``: the same cap,
                # checked exactly, whatever the chunk size.
                raise self.error(
                    record,
                    f"larger than the limit of {self.limits.max_record_chars:,} characters",
                    _LIMIT_HINT.format("max_record_chars"),
                )
            self.pos = end
            return value

    def _too_deep(self, record: str) -> BadInput:
        return self.error(
            record,
            f"JSON nested deeper than {self.limits.max_json_depth} levels",
            _LIMIT_HINT.format("max_json_depth"),
        )

    def _count(self, index: int, record: str) -> None:
        if index > self.limits.max_conversations:
            raise self.error(
                record,
                f"more than {self.limits.max_conversations:,} conversations",
                _LIMIT_HINT.format("max_conversations"),
            )

    def array_items(self) -> Iterator[JsonRecord]:
        self.pos += 1  # the '['
        nxt = self.skip_ws()
        if nxt == "]":
            self.pos += 1
            self._expect_end()
            return
        for index in itertools.count(1):
            record = f"item {index}"
            if nxt == "":
                raise self.error(record, "the file ends before the JSON array is closed")
            self._count(index, record)
            yield JsonRecord(self.decode_value(record), record, index)
            nxt = self.skip_ws()
            if nxt == ",":
                self.pos += 1
                nxt = self.skip_ws()
                continue
            if nxt == "]":
                self.pos += 1
                self._expect_end()
                return
            if nxt == "":
                raise self.error(record, "the file ends before the JSON array is closed")
            raise self.error(record, f"invalid JSON at {self.at(self.pos)}: expected ',' or ']'")

    def _expect_end(self) -> None:
        if self.skip_ws():
            raise self.error(None, f"unexpected data after the JSON array at {self.at(self.pos)}")

    def object_stream(self) -> Iterator[JsonRecord]:
        """JSONL (one object per line) and a single document read the same way: values one
        after the other, each labelled with the line it starts on."""
        nxt = self.skip_ws()
        for index in itertools.count(1):
            record = f"line {self.line_of(self.pos):,}"
            if nxt != "{":
                raise self.error(record, f"invalid JSON at {self.at(self.pos)}: expected an object")
            self._count(index, record)
            yield JsonRecord(self.decode_value(record), record, index)
            nxt = self.skip_ws()
            if nxt == "":
                return
