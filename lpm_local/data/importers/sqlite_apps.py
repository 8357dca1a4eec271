"""Chat databases of local apps: oterm (``store.db``), elia (``elia.sqlite``), llm (``logs.db``).

Schemas, from the apps' own code:
- oterm: ``chat(id, name, model, system, ...)``, ``message(id, chat_id, author, text, images)``;
  ``author`` is ``user``/``assistant`` (``me``/``ollama`` before oterm 0.12); no timestamps.
- elia: ``chat(id, model, title, started_at, archived)``, ``message(id, chat_id, role, content,
  timestamp, meta, parent_id, model)``; roles ``system``/``user``/``assistant`` (``human``/``ai``
  in old versions); SQLAlchemy stores naive UTC datetimes.
- llm: ``conversations(id, name, model)``, ``responses(id, model, prompt, system, response,
  conversation_id, datetime_utc, ...)``: one row per exchange, so one user and one assistant
  message each, the system prompt first whenever it changes.

The user's file is never modified: it is opened through a ``mode=ro`` URI (``immutable`` when
no journal is beside it) with ``query_only`` and ``trusted_schema=OFF`` (a crafted schema cannot
run functions). Only real
tables are read (a view named ``message`` could hide an endless recursive query), and their
columns are checked before any row is.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lpm_local.errors import BadInput

from .base import (
    DEFAULT_LIMITS,
    ImportedConversation,
    ImportedMessage,
    ImportLimits,
    ParseContext,
    Role,
    make_conversation,
)
from .fields import Place, iso_utc, ref_part, short, text_value, type_name

SQLITE_MAGIC = b"SQLite format 3\x00"
FORMATS = ("oterm", "elia", "llm")
_REQUIRED = {
    "oterm": {"chat": {"id", "name"}, "message": {"id", "chat_id", "author", "text"}},
    "elia": {"chat": {"id", "title"}, "message": {"id", "chat_id", "role", "content"}},
    "llm": {"responses": {"id", "prompt", "response", "conversation_id"}},
}
_ROLES: dict[str, Role] = {
    "user": "user", "me": "user", "human": "user",
    "assistant": "assistant", "ollama": "assistant", "ai": "assistant",
    "system": "system",
}  # fmt: skip
_SKIPPED_ROLES = frozenset({"tool", "function"})
_HINT = "is this the app's own database file, closed and not corrupted?"
_SIZE_HINT = (
    "raise ImportLimits.max_conversation_messages / max_record_chars if this file is trusted"
)


@contextmanager
def open_readonly(
    path: Path, limits: ImportLimits = DEFAULT_LIMITS
) -> Iterator[sqlite3.Connection]:
    """A read-only connection that cannot write the file or run schema-defined functions.

    With no ``-wal``/``-journal`` beside it the file is opened ``immutable``: no locks and no
    side files created in the user's directory. A journal means the app is running or crashed
    mid-write; then SQLite must read it (plain ``mode=ro``) to see a consistent database.
    """
    resolved = path.resolve()
    journal = resolved.with_name(resolved.name + "-journal")
    if journal.is_file() and journal.stat().st_size > 0:
        # A hot journal: the app crashed (or is) mid-write, and only a writer may roll it back,
        # which a read-only connection cannot ("attempt to write a readonly database"). Roll
        # it back in a private copy instead: the user's files stay as they are.
        with tempfile.TemporaryDirectory(prefix="lpm-import-") as tmp:
            copy = Path(tmp) / "app.db"
            try:
                shutil.copyfile(resolved, copy)
                shutil.copyfile(journal, copy.with_name(copy.name + "-journal"))
            except OSError as exc:
                raise BadInput(f"cannot read ({exc.strerror})", where=path.name) from None
            with _connected(copy, "?mode=rw", path.name, limits) as conn:
                yield conn
        return
    live = any(resolved.with_name(resolved.name + s).exists() for s in ("-wal", "-journal"))
    query = "?mode=ro" if live else "?mode=ro&immutable=1"
    with _connected(resolved, query, path.name, limits) as conn:
        yield conn


@contextmanager
def _connected(
    resolved: Path, query: str, name: str, limits: ImportLimits
) -> Iterator[sqlite3.Connection]:
    try:
        conn = sqlite3.connect("file:" + urllib.parse.quote(str(resolved)) + query, uri=True)
    except sqlite3.Error as exc:
        what = f"cannot open the database ({short(str(exc), 80)})"
        raise BadInput(what, where=name, hint=_HINT) from None
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        # SQLite itself refuses to hand over a value bigger than any message we would keep
        # (UTF-8 takes at most 4 bytes a character), so a 1 GB cell never reaches Python.
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(4 * limits.max_message_chars, 1 << 20))
        yield conn
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        # Python decodes TEXT columns itself and raises UnicodeDecodeError for invalid UTF-8.
        text = str(exc)
        bad_text = isinstance(exc, UnicodeDecodeError) or "decode" in text
        what = "text that is not valid UTF-8" if bad_text else short(text, 80)
        raise BadInput(f"cannot read the database ({what})", where=name, hint=_HINT) from None
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> dict[str, set[str]]:
    """Columns of the tables we read, if they exist as real (not virtual) tables."""
    wanted = sorted(
        {table for tables in _REQUIRED.values() for table in tables} | {"conversations"}
    )
    marks = ", ".join("?" * len(wanted))
    names = [
        row[0]
        for row in conn.execute(
            f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks}) "
            "AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%'",
            wanted,
        )
    ]
    return {
        name: {row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (name,))}
        for name in names
    }


def detect(path: Path) -> str:
    """Which app wrote this database: 'oterm', 'elia' or 'llm'."""
    with open_readonly(path) as conn:
        tables = _tables(conn)
    for fmt in FORMATS:
        if all(cols <= tables.get(table, set()) for table, cols in _REQUIRED[fmt].items()):
            return fmt
    raise BadInput(
        "an SQLite database, but not one of oterm, elia or llm",
        where=path.name,
        hint="supported databases: oterm store.db, elia elia.sqlite, llm logs.db",
    )


def conversations(path: Path, fmt: str, ctx: ParseContext) -> Iterator[ImportedConversation]:
    with open_readonly(path, ctx.limits) as conn:
        tables = _tables(conn)
        reader = {"oterm": _oterm, "elia": _elia, "llm": _llm}[fmt]
        for count, conversation in enumerate(reader(conn, tables, path.name, ctx), start=1):
            if count > ctx.limits.max_conversations:
                raise Place(path.name).error(
                    "",
                    f"more than {ctx.limits.max_conversations:,} conversations",
                    hint="raise ImportLimits.max_conversations if this file is trusted",
                )
            if conversation is not None:
                yield conversation


def _columns(available: set[str], wanted: list[str]) -> str:
    """A select list of ``wanted`` columns, NULL for those this schema version lacks."""
    return ", ".join(f'"{c}"' if c in available else f'NULL AS "{c}"' for c in wanted)


def _text(value: Any, place: Place, column: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise place.error(column, f"expected text, got {type_name(value)}")
    return value


def _role(value: Any, place: Place, column: str) -> Role | None:
    name = _text(value, place, column).lower()
    if name in _SKIPPED_ROLES:
        return None
    if name not in _ROLES:
        raise place.error(column, f"unknown role {short(name)!r}")
    return _ROLES[name]


class _Messages(list):
    """The messages of one chat, refused once they pass the per-conversation limits."""

    def __init__(self, ctx: ParseContext):
        super().__init__()
        self.limits, self.chars = ctx.limits, 0

    def add(
        self, role: Role | None, text: Any, created: Any, ref: str, place: Place, column: str
    ) -> None:
        limits = self.limits
        content = text_value(_text(text, place, column), place, column, limits.max_message_chars)
        if role is None or not content.strip():
            return
        self.chars += len(content)
        if len(self) >= limits.max_conversation_messages or self.chars > limits.max_record_chars:
            raise place.error("", "conversation larger than the limit", hint=_SIZE_HINT)
        self.append(ImportedMessage(role, content, iso_utc(created, place, "timestamp"), ref))


Rows = Iterator[ImportedConversation | None]


def _oterm(conn: sqlite3.Connection, tables: dict, file: str, ctx: ParseContext) -> Rows:
    chats = f"SELECT {_columns(tables['chat'], ['id', 'name', 'system'])} FROM chat ORDER BY id"
    rows = "SELECT id, author, text FROM message WHERE chat_id = ? ORDER BY id"
    for chat_id, name, system in conn.execute(chats):
        place = Place(file, f"chat {short(str(chat_id))}")
        conv_ref = f"oterm:{ref_part(chat_id)}"
        messages = _Messages(ctx)
        messages.add("system", system, None, f"{conv_ref}:system", place, "system")
        for msg_id, author, text in conn.execute(rows, (chat_id,)):
            row = Place(file, f"message {short(str(msg_id))}")
            ref = f"{conv_ref}:{ref_part(msg_id)}"
            messages.add(_role(author, row, "author"), text, None, ref, row, "text")
        title = _text(name, place, "name") or None
        yield make_conversation(title, None, list(messages), conv_ref)


def _elia(conn: sqlite3.Connection, tables: dict, file: str, ctx: ParseContext) -> Rows:
    chats = (
        f"SELECT {_columns(tables['chat'], ['id', 'title', 'started_at'])} FROM chat ORDER BY id"
    )
    wanted = ["id", "role", "content", "timestamp"]
    rows = (
        f"SELECT {_columns(tables['message'], wanted)} FROM message WHERE chat_id = ? ORDER BY id"
    )
    for chat_id, title, started in conn.execute(chats):
        place = Place(file, f"chat {short(str(chat_id))}")
        conv_ref = f"elia:{ref_part(chat_id)}"
        messages = _Messages(ctx)
        for msg_id, role, content, stamp in conn.execute(rows, (chat_id,)):
            row = Place(file, f"message {short(str(msg_id))}")
            ref = f"{conv_ref}:{ref_part(msg_id)}"
            messages.add(_role(role, row, "role"), content, stamp, ref, row, "content")
        created = iso_utc(started, place, "started_at")
        title = _text(title, place, "title") or None
        yield make_conversation(title, created, list(messages), conv_ref)


def _llm(conn: sqlite3.Connection, tables: dict, file: str, ctx: ParseContext) -> Rows:
    """Responses sorted by conversation (ULIDs sort by time), grouped as they stream by."""
    wanted = ["id", "prompt", "system", "response", "conversation_id", "datetime_utc"]
    rows = conn.execute(
        f"SELECT {_columns(tables['responses'], wanted)} FROM responses "
        "ORDER BY conversation_id, datetime_utc, rowid"
    )
    named = "name" in tables.get("conversations", set())
    group: list[tuple] = []
    for row in rows:
        if group and (row[4] is None or row[4] != group[-1][4]):
            yield _llm_conversation(conn, group, named, file, ctx)
            group = []
        group.append(row)
        if len(group) > ctx.limits.max_conversation_messages:
            raise Place(file).error("", "conversation larger than the limit", hint=_SIZE_HINT)
    if group:
        yield _llm_conversation(conn, group, named, file, ctx)


def _llm_conversation(
    conn: sqlite3.Connection, group: list[tuple], named: bool, file: str, ctx: ParseContext
) -> ImportedConversation | None:
    conv_id = group[0][4]
    conv_ref = f"llm:{ref_part(conv_id if conv_id is not None else 'response-' + str(group[0][0]))}"
    title = None
    if named and conv_id is not None:
        found = conn.execute("SELECT name FROM conversations WHERE id = ?", (conv_id,)).fetchone()
        if found:
            title = _text(found[0], Place(file, f"conversation {short(str(conv_id))}"), "name")
    messages = _Messages(ctx)
    last_system = ""
    for resp_id, prompt, system, response, _, stamp in group:
        place = Place(file, f"response {short(str(resp_id))}")
        ref = f"{conv_ref}:{ref_part(resp_id)}"
        system_text = _text(system, place, "system")
        if system_text.strip() and system_text != last_system:
            messages.add("system", system_text, stamp, f"{ref}:system", place, "system")
            last_system = system_text
        messages.add("user", prompt, stamp, f"{ref}:prompt", place, "prompt")
        messages.add("assistant", response, stamp, f"{ref}:response", place, "response")
    created = messages[0].created_at if messages else None
    return make_conversation(title or None, created, list(messages), conv_ref)
