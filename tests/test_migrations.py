"""Schema migrations (R20): from blank, from every older schema, re-run, injected failures."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from lpm_local import locations
from lpm_local.storage.migrations import MIGRATION_SET, migrations
from lpm_local.storage.store import Store

EXPECTED_COLUMNS = {
    "profiles": {"id", "name", "created_at", "memory_enabled", "current_version_id", "note"},
    "settings": {"key", "value"},
    "imports": {
        "id",
        "profile_id",
        "file_sha256",
        "file_name",
        "format",
        "created_at",
        "n_conversations",
        "n_messages",
        "memory_version_before",
        "note_added",
    },
    "conversations": {
        "id",
        "profile_id",
        "title",
        "created_at",
        "updated_at",
        "exclude_from_memory",
        "import_id",
        "source_ref",
        "content_sha256",
    },
    "messages": {
        "id",
        "conversation_id",
        "role",
        "content",
        "created_at",
        "import_id",
        "source_ref",
    },
    "memory_versions": {
        "id",
        "profile_id",
        "parent_id",
        "created_at",
        "backbone",
        "projector_sha256",
        "config_json",
        "tensors",
        "sha256",
        "train_loss",
        "heldout_loss",
        "trained_through_message_id",
        "reason",
    },
    "refits": {
        "id",
        "profile_id",
        "started_at",
        "finished_at",
        "status",
        "base_version_id",
        "new_version_id",
        "steps",
        "detail",
    },
    "audit": {"id", "profile_id", "at", "action", "detail"},
    "pending_wipes": {"id", "kind", "profile_id", "profile_name", "status", "created_at"},
    "reply_attention": {"message_id", "version_id", "created_at", "attention"},
    "_sqlite_migrations": {"id", "migration_set", "name", "applied_at"},
}

# (table, column) -> (referenced table, ON DELETE action)
EXPECTED_FOREIGN_KEYS = {
    ("profiles", "current_version_id"): ("memory_versions", "SET NULL"),
    ("imports", "profile_id"): ("profiles", "CASCADE"),
    ("conversations", "profile_id"): ("profiles", "CASCADE"),
    ("conversations", "import_id"): ("imports", "CASCADE"),
    ("messages", "conversation_id"): ("conversations", "CASCADE"),
    ("messages", "import_id"): ("imports", "CASCADE"),
    ("memory_versions", "profile_id"): ("profiles", "CASCADE"),
    ("memory_versions", "parent_id"): ("memory_versions", "SET NULL"),
    ("refits", "profile_id"): ("profiles", "CASCADE"),
    ("audit", "profile_id"): ("profiles", "CASCADE"),
    ("reply_attention", "message_id"): ("messages", "CASCADE"),
    ("reply_attention", "version_id"): ("memory_versions", "SET NULL"),
}


def _schema(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).fetchall()


def _applied(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT migration_set, name, applied_at FROM _sqlite_migrations ORDER BY id"
    ).fetchall()


def _names() -> list[str]:
    with Database(memory=True) as db:
        return [m.name for m in migrations.pending(db)]


def test_blank_database_gets_the_expected_schema():
    with Store.open() as s:
        tables = {
            name: {c[1] for c in s.conn.execute(f"PRAGMA table_info({name})")}
            for (name,) in s.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        assert tables == EXPECTED_COLUMNS
        fks = {
            (table, fk[3]): (fk[2], fk[6])
            for table in tables
            for fk in s.conn.execute(f"PRAGMA foreign_key_list({table})")
        }
        assert fks == EXPECTED_FOREIGN_KEYS
        assert [r[1] for r in _applied(s.conn)] == _names()
        # No full-text index: FTS5 segments would keep wiped words (R5).
        assert not s.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE sql LIKE '%VIRTUAL TABLE%'"
        ).fetchall()


def test_schema_enforces_roles_and_cascades():
    with Store.open() as s:
        p = s.ensure_profile()
        c = s.create_conversation(p.id)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            with s.transaction():
                s.conn.execute(
                    "INSERT INTO messages (conversation_id, role, content, created_at)"
                    " VALUES (?, 'tool', 'x', 'now')",
                    (c.id,),
                )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            with s.transaction():
                s.conn.execute(
                    "INSERT INTO conversations (profile_id, created_at, updated_at)"
                    " VALUES (999, 'now', 'now')"
                )


def test_rerunning_migrations_is_a_no_op():
    with Store.open() as s:
        schema, applied = _schema(s.conn), _applied(s.conn)
        assert s.migrate() == []
        assert _schema(s.conn) == schema and _applied(s.conn) == applied
    with Store.open() as s:
        assert _schema(s.conn) == schema and _applied(s.conn) == applied


@pytest.mark.parametrize("n_done", range(len(_names())))
def test_every_older_schema_migrates_to_the_same_schema(tmp_path, n_done):
    with Store.open(tmp_path / "blank.sqlite3") as s:
        target = _schema(s.conn)
    names = _names()
    old = locations.ensure_private_dir(tmp_path / "old") / "db.sqlite3"
    with Database(sqlite3.connect(old, isolation_level=None)) as db:
        migrations.apply(db, stop_before=names[n_done])
        assert [m.name for m in migrations.applied(db)] == names[:n_done]
    with Store.open(old) as s:
        assert _schema(s.conn) == target
        assert [r[1] for r in _applied(s.conn)] == names


def _fail_after_writing(db: Database) -> None:
    """A migration that changes schema and data, then fails."""
    db.execute("CREATE TABLE half_done (x INTEGER)")
    db.execute("ALTER TABLE profiles ADD COLUMN half_done TEXT")
    db.execute("INSERT INTO profiles (name, created_at) VALUES ('ghost', 'now')")
    raise RuntimeError("injected failure")


def test_failed_migration_leaves_no_change():
    with Store.open() as s:
        s.ensure_profile("real")
        schema, applied = _schema(s.conn), _applied(s.conn)
        broken = copy.deepcopy(migrations)
        broken(name="m999_injected_failure")(_fail_after_writing)
        with pytest.raises(RuntimeError, match="injected failure"):
            s.migrate(broken)
        assert _schema(s.conn) == schema
        assert _applied(s.conn) == applied
        assert [p.name for p in s.list_profiles()] == ["real"]
        assert not s.conn.in_transaction
        assert [m.name for m in broken.pending(s.db)] == ["m999_injected_failure"]
    # The shipped set is untouched by the copy.
    assert "m999_injected_failure" not in _names()


def test_failed_first_migration_on_a_blank_database_leaves_it_blank(tmp_path):
    path: Path = tmp_path / "blank.sqlite3"
    with Store.open(path, migrate=False) as s:
        broken = Migrations(MIGRATION_SET)

        @broken()
        def m001_fails(db: Database) -> None:
            db.execute("CREATE TABLE t (x INTEGER)")
            raise RuntimeError("injected failure")

        with pytest.raises(RuntimeError):
            s.migrate(broken)
        assert _schema(s.conn) == []  # not even _sqlite_migrations
