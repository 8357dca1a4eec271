"""Which format a path holds, from its content (never its name), and ``parse_file``.

A path is a regular file (JSON, JSONL, Markdown/text -- oterm's and ``llm logs``' exports
recognised by their structure -- SQLite, zip) or a directory (an unzipped
export). Zips and directories are searched for ``conversations.json`` or the 2026 shards
``conversations-000.json``, ``conversations-001.json``... (shards win when both exist); the
first record of the first of them decides between ChatGPT, Claude and the other JSON formats.
A zip whose ``manifest.json`` says ``"format": "lpm-bundle"`` is this app's own memory bundle:
it is reported as ``lpm-bundle`` and left to the bundle importer.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lpm_local.errors import BadInput

from . import (
    chatgpt,
    claude,
    llm_markdown,
    openai_jsonl,
    openwebui,
    oterm_markdown,
    sharegpt,
    sqlite_apps,
    transcript,
)
from .base import DEFAULT_LIMITS, ImportedConversation, ImportLimits, ParseContext, ParsedFile
from .fields import Place, short
from .safe_json import iter_records
from .safe_zip import SafeZip, is_zip
from .textio import Progress, TextReader, read_text_head

BUNDLE_FORMAT = "lpm-bundle"
# Checked in this order: the first whose ``matches`` accepts the first record wins.
JSON_FORMATS = (chatgpt, claude, openai_jsonl, sharegpt, openwebui)
SUPPORTED_FORMATS: tuple[str, ...] = (
    *(m.FORMAT for m in JSON_FORMATS),
    *sqlite_apps.FORMATS,
    oterm_markdown.FORMAT,
    llm_markdown.FORMAT,
    transcript.FORMAT,
    BUNDLE_FORMAT,
)
# Line-based exports with a fixed structure, detected from their first lines.
_LINE_FORMATS = {m.FORMAT: m for m in (oterm_markdown, llm_markdown)}
_HEAD_BYTES = 256 * 1024
_MANIFEST_BYTES = 1 << 20
_CONVERSATIONS = re.compile(r"conversations(?:-(\d+))?\.json\Z")
_SUPPORTED_HINT = "supported: " + ", ".join(SUPPORTED_FORMATS)


@dataclass
class _Member:
    """One text file to read: a plain file, a file in a directory, or a zip member."""

    name: str  # as shown in messages: "conversations.json", "export.zip/conversations-001.json"
    size: int
    open: Callable[[], BinaryIO]


@dataclass
class _Resolved:
    format: str
    members: list[_Member]
    mode: str = ""  # transcript: 'markdown' or 'plain'
    archive: SafeZip | None = None

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


def detect_format(path: Path | str, limits: ImportLimits = DEFAULT_LIMITS) -> str:
    """The format name of ``path`` (one of ``SUPPORTED_FORMATS``), or a BadInput saying why not."""
    resolved = _resolve(Path(path), limits)
    resolved.close()
    return resolved.format


def parse_file(
    path: Path | str, *, limits: ImportLimits = DEFAULT_LIMITS, progress: Progress | None = None
) -> ParsedFile:
    """Detect ``path``'s format and open it for streaming.

    Errors in the file may surface while ``conversations`` is consumed (see ``base``); close
    the result (or use it in a ``with``) to release the file. ``progress(done, total)`` is
    called with the bytes read so far of text formats (databases do not report progress).
    """
    path = Path(path)
    resolved = _resolve(path, limits)
    if resolved.format == BUNDLE_FORMAT:
        resolved.close()
        raise BadInput(
            "this is an lpm memory bundle, not a chat log",
            where=path.name,
            hint="import it with `lpm memory import`",
        )
    ctx = ParseContext(limits)
    stream = _stream(path, resolved, ctx, progress)
    return ParsedFile(path, resolved.format, stream, ctx.profile_notes, release=resolved.close)


def _stream(
    path: Path, resolved: _Resolved, ctx: ParseContext, progress: Progress | None
) -> Iterator[ImportedConversation]:
    """The parser's conversations, under the caps every format shares: each parser checks them
    early, where it can bound its memory; this checks them again for all, the same way."""
    limits = ctx.limits
    count = 0
    for conversation in _parsed(path, resolved, ctx, progress):
        count += 1
        if count > limits.max_conversations:
            raise BadInput(
                f"more than {limits.max_conversations:,} conversations",
                where=short(path.name, 120),
                hint="raise ImportLimits.max_conversations if this file is trusted",
            )
        if len(conversation.messages) > limits.max_conversation_messages:
            raise BadInput(
                f"conversation {count:,} has more than {limits.max_conversation_messages:,} "
                "messages",
                where=short(path.name, 120),
                hint="raise ImportLimits.max_conversation_messages if this file is trusted",
            )
        yield conversation


def _parsed(
    path: Path, resolved: _Resolved, ctx: ParseContext, progress: Progress | None
) -> Iterator[ImportedConversation]:
    try:
        if resolved.format in sqlite_apps.FORMATS:
            yield from sqlite_apps.conversations(path, resolved.format, ctx)
            return
        total = sum(m.size for m in resolved.members)
        done = 0
        for member in resolved.members:
            report = (
                None if progress is None else (lambda n, _t, base=done: progress(base + n, total))
            )
            with member.open() as raw:
                reader = TextReader(raw, member.name, total_bytes=member.size, progress=report)
                if resolved.format == transcript.FORMAT:
                    yield from transcript.conversations(reader, resolved.mode, ctx)
                elif resolved.format in _LINE_FORMATS:
                    yield from _LINE_FORMATS[resolved.format].conversations(reader, ctx)
                else:
                    yield from _json_conversations(reader, member.name, resolved.format, ctx)
            done += member.size
    finally:
        resolved.close()


def _json_conversations(
    reader: TextReader, file: str, format_name: str, ctx: ParseContext
) -> Iterator[ImportedConversation]:
    """One conversation per JSON record (array item or JSONL line); the format's converter
    returns None for records that hold nothing to import."""
    convert = _json_module(format_name).conversation
    for record in iter_records(reader, ctx.limits):
        conversation = convert(record, Place(file, record.record), ctx)
        if conversation is not None:
            yield conversation


def _json_module(name: str):
    return next(m for m in JSON_FORMATS if m.FORMAT == name)


def _resolve(path: Path, limits: ImportLimits) -> _Resolved:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadInput("no such file or directory", where=str(path)) from None
    except OSError as exc:
        raise BadInput(f"cannot read ({exc.strerror})", where=str(path)) from None
    if stat.S_ISDIR(info.st_mode):
        return _resolve_directory(path, limits)
    if not stat.S_ISREG(info.st_mode):
        raise BadInput("not a regular file", where=path.name)
    if info.st_size == 0:
        raise BadInput("the file is empty", where=path.name)
    if info.st_size > limits.max_file_bytes:
        raise BadInput(
            f"file of {info.st_size:,} bytes is over the limit of {limits.max_file_bytes:,}",
            where=path.name,
            hint="raise ImportLimits.max_file_bytes if this file is trusted",
        )
    with _open(path, path.name) as fh:
        head = fh.read(len(sqlite_apps.SQLITE_MAGIC))
    if head.startswith(sqlite_apps.SQLITE_MAGIC):
        return _Resolved(sqlite_apps.detect(path), [])
    if is_zip(head):
        return _resolve_zip(path, limits)
    member = _Member(path.name, info.st_size, lambda: _open(path, path.name))
    return _resolve_text([member], limits, path.name)


def _resolve_zip(path: Path, limits: ImportLimits) -> _Resolved:
    archive = SafeZip(path, limits)
    try:
        names = archive.names()
        if "manifest.json" in names and _is_bundle(archive):
            return _Resolved(BUNDLE_FORMAT, [], archive=archive)
        chosen = _conversation_files(names)
        if not chosen:
            raise BadInput(
                "the zip holds no conversations.json", where=path.name, hint=_SUPPORTED_HINT
            )
        members = [
            _Member(f"{path.name}/{short(n, 120)}", archive.size(n), lambda n=n: archive.open(n))
            for n in chosen
        ]
        resolved = _resolve_text(members, limits, path.name)
        resolved.archive = archive
        return resolved
    except BaseException:
        archive.close()
        raise


def _is_bundle(archive: SafeZip) -> bool:
    with archive.open("manifest.json") as raw:
        data = raw.read(_MANIFEST_BYTES + 1)
    try:
        manifest = json.loads(data[:_MANIFEST_BYTES])
    except (ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == BUNDLE_FORMAT


def _resolve_directory(path: Path, limits: ImportLimits) -> _Resolved:
    try:
        entries = {e.name: e for e in os.scandir(path) if e.is_file()}
    except OSError as exc:
        raise BadInput(f"cannot list the directory ({exc.strerror})", where=str(path)) from None
    chosen = _conversation_files(list(entries))
    if not chosen:
        raise BadInput(
            "the directory holds no conversations.json", where=str(path), hint=_SUPPORTED_HINT
        )
    members = []
    for name in chosen:
        label = f"{path.name}/{short(name, 120)}"
        try:
            size = entries[name].stat().st_size
        except OSError as exc:
            raise BadInput(f"cannot read ({exc.strerror})", where=label) from None
        if size > limits.max_file_bytes:
            raise BadInput(f"file of {size:,} bytes is over the limit", where=label)
        members.append(_Member(label, size, lambda p=path / name, n=label: _open(p, n)))
    return _resolve_text(members, limits, path.name)


def _open(path: Path, label: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BadInput(f"cannot read ({exc.strerror})", where=label) from None


def _conversation_files(names: list[str]) -> list[str]:
    """The shards (in number order) or the conversations.json of the shallowest folder."""
    found: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        match = _CONVERSATIONS.match(base)
        if match:
            number = int(match.group(1)) if match.group(1) else -1
            found.setdefault(folder, []).append((number, name))
    if not found:
        return []
    folder = min(found, key=lambda f: (f.count("/") + bool(f), f))
    files = sorted(found[folder])
    shards = [name for number, name in files if number >= 0]
    return shards or [name for _, name in files]


def _resolve_text(members: list[_Member], limits: ImportLimits, label: str) -> _Resolved:
    first = members[0]
    with first.open() as raw:
        head = read_text_head(raw, first.name, _HEAD_BYTES)
    start = head.lstrip(" \t\r\n")[:1]
    if start in ("[", "{"):
        return _Resolved(_sniff_json(first, limits), members)
    # Exports with a fixed structure first: an oterm or llm export is also loose Markdown.
    for module in _LINE_FORMATS.values():
        if len(members) == 1 and module.sniff(head):
            return _Resolved(module.FORMAT, members)
    mode = transcript.sniff_mode(head)
    if mode is not None and len(members) == 1:
        return _Resolved(transcript.FORMAT, members, mode=mode)
    raise BadInput("not a recognised chat log", where=first.name, hint=_SUPPORTED_HINT)


def _sniff_json(member: _Member, limits: ImportLimits) -> str:
    with member.open() as raw:
        reader = TextReader(raw, member.name, total_bytes=member.size)
        records = iter_records(reader, limits)
        first = next(records, None)
        records.close()
    if first is None:
        raise BadInput("the file holds an empty JSON array: nothing to import", where=member.name)
    for module in JSON_FORMATS:
        if module.matches(first.value):
            return module.FORMAT
    place = Place(member.name, first.record)
    raise place.error("", "JSON, but not a recognised chat export", hint=_SUPPORTED_HINT)
