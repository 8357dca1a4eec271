"""The database schema, as append-only named migrations.

Rules, so that every database ever created can be brought forward:

- Never edit or reorder a migration that has shipped; add ``m002_...``, ``m003_...`` at the end.
- ``Store.migrate`` runs each pending migration in its own ``BEGIN IMMEDIATE`` transaction,
  together with its row in ``_sqlite_migrations``: a migration that raises leaves the database
  exactly as it was, and two processes opening a fresh database at once cannot both apply it.
- Run statements one by one with ``db.execute``: ``executescript`` would COMMIT the open
  transaction first, and non-transactional migrations (``transactional=False``) are refused.
- Storage decisions are explained here, in the migration that makes them.

Deliberately absent: full-text search. An FTS5 index on SQLite 3.40 keeps the tokens of deleted rows
in its segment b-trees until a merge or rebuild, so words of a wiped message would survive in the
file, and a wipe must leave no byte of what it deleted in any file. Search, if added, must scan
``messages`` or rebuild the index as part of every delete.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "lpm"

migrations = Migrations(MIGRATION_SET)


def _run(db: Database, statements: list[str]) -> None:
    for sql in statements:
        db.execute(sql)


@migrations()
def m001_initial(db: Database) -> None:
    """The first schema: a profile owns everything else, and deleting it deletes all of it.

    - Every table that holds personal data reaches ``profiles`` through an ``ON DELETE CASCADE``
      foreign key, so forgetting a profile is one ``DELETE`` (with ``secure_delete`` the bytes are
      zeroed too). Connections must set ``PRAGMA foreign_keys=ON``; ``Store`` always does.
    - ``imports`` records each imported file by sha256, unique per profile, so re-importing the
      same file adds nothing; conversations and messages point at their import with a cascading
      key, so "undo import" is one ``DELETE FROM imports``. ``memory_version_before`` lets the
      undo restore the memory that was current before the import, bit for bit.
    - ``memory_versions.tensors`` holds the safetensors bytes inside the database, not in side
      files: a new version and the ``profiles.current_version_id`` pointer to it commit in one
      transaction (a crash leaves the old or the new memory, never a dangling file), a wipe
      reaches them, and one file is the whole backup. ``sha256`` is checked on every load.
    - ``current_version_id`` and ``parent_id`` use ``ON DELETE SET NULL``: pruning old versions
      must never delete a profile or a newer version; a profile without a version has no memory.
    - Timestamps are ISO 8601 UTC text with microseconds (``records.utc_now``), so ordering by
      them is time order.
    - Every foreign-key column has an index: a cascading delete or a ``SET NULL`` otherwise scans
      the whole child table once per deleted parent row.
    """
    _run(
        db,
        [
            """CREATE TABLE profiles (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            memory_enabled INTEGER NOT NULL DEFAULT 1 CHECK (memory_enabled IN (0, 1)),
            current_version_id INTEGER NULL
                REFERENCES memory_versions(id) ON DELETE SET NULL,
            note TEXT
        )""",
            # Small app-wide state: the active profile's name, the selected model, ...
            """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT
        )""",
            """CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
            file_sha256 TEXT NOT NULL,
            file_name TEXT,
            format TEXT,
            created_at TEXT NOT NULL,
            n_conversations INTEGER NOT NULL DEFAULT 0,
            n_messages INTEGER NOT NULL DEFAULT 0,
            memory_version_before INTEGER NULL,
            UNIQUE (profile_id, file_sha256)
        )""",
            # exclude_from_memory: the user keeps the chat but the memory must never learn from it.
            # source_ref: where an imported conversation came from (e.g. the export's id), for
            # provenance; NULL for chats typed here.
            """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
            title TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            exclude_from_memory INTEGER NOT NULL DEFAULT 0
                CHECK (exclude_from_memory IN (0, 1)),
            import_id INTEGER NULL REFERENCES imports(id) ON DELETE CASCADE,
            source_ref TEXT
        )""",
            "CREATE INDEX conversations_profile ON conversations (profile_id, updated_at)",
            "CREATE INDEX conversations_import ON conversations (import_id)",
            # The role CHECK keeps anything but the three chat-template roles out: a role string
            # from an imported file never reaches the template as a new turn type.
            """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL
                REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created_at TEXT NOT NULL,
            import_id INTEGER NULL REFERENCES imports(id) ON DELETE CASCADE,
            source_ref TEXT
        )""",
            # Reading a conversation in order is the hot path (every turn, every refit).
            "CREATE INDEX messages_conversation ON messages (conversation_id, id)",
            "CREATE INDEX messages_import ON messages (import_id)",
            # trained_through_message_id: the newest message id the slots have seen, so the next
            # refit knows what is new. reason: "refit", "import", "rollback", "bundle", ...
            """CREATE TABLE memory_versions (
            id INTEGER PRIMARY KEY,
            profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
            parent_id INTEGER NULL REFERENCES memory_versions(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            backbone TEXT,
            projector_sha256 TEXT,
            config_json TEXT,
            tensors BLOB NOT NULL,
            sha256 TEXT NOT NULL,
            train_loss REAL,
            heldout_loss REAL,
            trained_through_message_id INTEGER,
            reason TEXT
        )""",
            "CREATE INDEX memory_versions_profile ON memory_versions (profile_id, id)",
            "CREATE INDEX memory_versions_parent ON memory_versions (parent_id)",
            "CREATE INDEX profiles_current_version ON profiles (current_version_id)",
            # One row per refit attempt, whatever its outcome, so the UI can show progress history
            # and a crash leaves a visible 'running' row rather than nothing.
            """CREATE TABLE refits (
            id INTEGER PRIMARY KEY,
            profile_id INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL CHECK (status IN
                ('running', 'committed', 'no_improvement', 'cancelled', 'failed')),
            base_version_id INTEGER,
            new_version_id INTEGER,
            steps INTEGER,
            detail TEXT
        )""",
            "CREATE INDEX refits_profile ON refits (profile_id, id)",
            # profile_id NULL: an app-wide event. Audit rows of a profile go with the profile.
            """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            profile_id INTEGER NULL REFERENCES profiles(id) ON DELETE CASCADE,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT
        )""",
            "CREATE INDEX audit_profile ON audit (profile_id, id)",
        ],
    )


@migrations()
def m002_pending_wipes(db: Database) -> None:
    """Wipe intents, so that a wipe killed half way is finished at the next start.

    - ``lpm_local.data.wipe`` commits a row here *before* deleting anything; the delete runs in a
      second transaction that also moves the row to 'vacuum'; then ``VACUUM`` rebuilds the file
      and the row is deleted. ``wipe.resume_pending_wipes`` (run after opening the store) redoes
      whatever a killed wipe left: the delete if it never committed, the VACUUM in any case.
    - No foreign key to ``profiles``: the row must outlive the profile it wipes. It keeps the
      profile's id *and* name so that a resumed wipe never acts on another profile that later
      reused the id; the row itself is deleted (and zeroed by ``secure_delete``) at the end.
    """
    _run(
        db,
        [
            """CREATE TABLE pending_wipes (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('memory', 'profile', 'all')),
            profile_id INTEGER,
            profile_name TEXT,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'vacuum')),
            created_at TEXT NOT NULL
        )""",
        ],
    )


@migrations()
def m003_reply_attention(db: Database) -> None:
    """Which memory slots each reply read: the inspector's per-reply heatmap and slot usage.

    - One row per assistant message that was conditioned on memory: the projector's attention
      ``[heads, M, N]`` as a small safetensors blob (~1 KB), never pickle.
    - ``message_id`` cascades: deleting a message, conversation, import or profile deletes its
      rows (with ``secure_delete`` the bytes are zeroed). ``version_id`` is informative only and
      becomes NULL when pruning deletes that version.
    - The memory runtime keeps the newest 500 rows per profile; forgetting the memory ("wipe
      memory, keep chats") must delete these rows too.
    """
    _run(
        db,
        [
            """CREATE TABLE reply_attention (
            message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            version_id INTEGER NULL REFERENCES memory_versions(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            attention BLOB NOT NULL
        )""",
            "CREATE INDEX reply_attention_version ON reply_attention (version_id)",
        ],
    )


@migrations()
def m004_content_dedup_and_import_notes(db: Database) -> None:
    """Dedup by content, and undo of what an import added to the profile note.

    - ``conversations.content_sha256``: sha256 of a conversation's (role, content) sequence
      (``data.sources.conversation_sha256``), set when an import or a bundle restore adds it.
      The same conversations arriving again -- the json, the zip and the unzipped folder of one
      export, or a bundle restored into the profile it came from -- are recognised by it and
      added once, whatever the container's bytes. NULL for chats typed here and for rows made
      before this migration: the importer hashes those on the fly, so nothing is backfilled.
      Indexed with the profile, the scope of a duplicate.
    - ``imports.note_added``: the parts an import appended to the profile note (ChatGPT custom
      instructions), as a JSON list of strings, so that undoing the import removes exactly
      them. NULL when it added nothing.
    """
    _run(
        db,
        [
            "ALTER TABLE conversations ADD COLUMN content_sha256 TEXT",
            "CREATE INDEX conversations_content ON conversations (profile_id, content_sha256)",
            "ALTER TABLE imports ADD COLUMN note_added TEXT",
        ],
    )
