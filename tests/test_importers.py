"""Chat-log importers: each real export structure parses to exactly the conversations the user
saw; detection works from content; the stream is lazy and memory-bounded; refusals are one
``BadInput`` line naming the file and the place."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import struct
import tracemalloc
import zipfile
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpm_local.data.importers import ImportLimits, detect_format, parse_file
from lpm_local.data.importers.fields import Place, clean_text, iso_utc
from lpm_local.data.importers.safe_json import iter_records, json_depth
from lpm_local.data.importers.textio import TextReader
from lpm_local.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def build_db(tmp_path: Path, script: str, name: str) -> Path:
    """A real SQLite file built from one of the schema+data scripts in fixtures/imports/sqlite."""
    path = tmp_path / name
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / "sqlite" / script).read_text())
    conn.commit()
    conn.close()
    return path


def zip_dir(src: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in sorted(src.iterdir()):
            zf.write(item, prefix + item.name)
    return dest


def parsed(path: Path, **kw):
    """(format, [(title, [(role, content), ...]), ...], profile notes) of a fully read file."""
    with parse_file(path, **kw) as pf:
        convs = [(c.title, [(m.role, m.content) for m in c.messages]) for c in pf.conversations]
        return pf.format, convs, list(pf.profile_notes)


LISBON = (
    "Lisbon trip",
    [
        ("user", "I'm planning a 3-day trip to Lisbon in May. What should I not miss?"),
        ("assistant", "Day 1: Alfama and the castle. Day 2: Belém. Day 3: a day trip to Sintra."),
        ("user", "How much is the train to Sintra, and how long does it take?"),
        ("assistant", "About 40 minutes from Rossio; a return ticket is 4.90 €."),
        ("user", "What is this building?"),
        ("assistant", "That is the Pena Palace in Sintra."),
    ],
)
SOURDOUGH = (
    "Sourdough starter",
    [
        ("user", "My sourdough starter smells like nail polish. Is it dead? 🍞"),
        (
            "assistant",
            "No — that acetone smell means it is hungry.\n"
            "Feed it twice a day at 1:1:1 and it will recover.",
        ),
    ],
)
CHATGPT_NOTES = [
    "About me (ChatGPT custom instructions): Preferred name: Sam\n"
    "Role: secondary-school teacher in Porto",
    "How I want replies (ChatGPT custom instructions): Be concise. Use metric units.",
]


# --------------------------------------------------------------------------- formats


def test_chatgpt_walks_current_branch_and_skips_hidden_tool_and_non_text_nodes():
    fmt, convs, notes = parsed(FIXTURES / "chatgpt" / "conversations.json")
    assert fmt == "chatgpt"
    # Regenerated answer, edited question, code call, tool output, thoughts and the node past
    # current_node are all absent; the empty "New chat" conversation is not yielded at all.
    assert convs == [LISBON, SOURDOUGH]
    assert notes == CHATGPT_NOTES


def test_chatgpt_provenance_and_timestamps():
    with parse_file(FIXTURES / "chatgpt" / "conversations.json") as pf:
        first = next(pf.conversations)
    assert first.source_ref == "chatgpt:6632a1f0-1b2c-8000-9d3e-4f5a6b7c8d9e"
    assert first.created_at == "2024-05-01T10:29:58.623+00:00"
    assert [m.source_ref.rsplit(":", 1)[1] for m in first.messages] == [
        "aaa2-u1", "d5e6-a1", "e7f8-u2", "1c2d-a2", "2e3f-u3", "3a4b-a3",
    ]  # fmt: skip
    assert first.messages[0].created_at == "2024-05-01T10:30:00.123+00:00"


def test_chatgpt_sharded_directory_and_zip_give_the_same_result(tmp_path):
    single = parsed(FIXTURES / "chatgpt" / "conversations.json")
    sharded = parsed(FIXTURES / "chatgpt_sharded")
    archive = parsed(zip_dir(FIXTURES / "chatgpt", tmp_path / "export.zip", prefix="export-2026/"))
    shard_zip = parsed(zip_dir(FIXTURES / "chatgpt_sharded", tmp_path / "shards.zip"))
    assert single == sharded == archive == shard_zip


def test_claude_text_from_content_blocks_and_branch():
    fmt, convs, _ = parsed(FIXTURES / "claude" / "conversations.json")
    assert fmt == "claude"
    assert convs == [
        (
            "Balcony herbs",
            [
                ("user", "I have a small north-facing balcony. Which herbs will grow there?"),
                ("assistant", "Mint, parsley, chives and lemon balm cope well with shade."),
                ("user", "Here is my layout. Which pot should the mint go in?"),
                (
                    "assistant",
                    "Let me check how invasive mint is.\n"
                    "Give the mint pot B on its own: its runners would take over pot A.",
                ),
            ],
        ),
        (
            "Quick dinner",
            [
                ("user", "Give me a quick dinner idea with chickpeas."),
                ("assistant", "Try a 20-minute chickpea and spinach curry with coconut milk."),
            ],
        ),
    ]
    _, branched, _ = parsed(FIXTURES / "claude" / "branched.json")
    assert branched == [
        (
            "Name for a cat",
            [
                ("user", "Suggest a name for a grey cat."),
                ("assistant", "How about Ash?"),
                ("user", "Ash it is, thanks!"),
            ],
        )
    ]


def test_openwebui_current_branch_system_prompt_and_reasoning_removed():
    fmt, convs, _ = parsed(FIXTURES / "openwebui" / "chat-export-1718100000000.json")
    assert fmt == "openwebui"
    assert convs == [
        (
            "Rust lifetimes",
            [
                ("system", "You are a patient Rust tutor."),
                (
                    "user",
                    "Why does the borrow checker reject returning a reference to a local String?",
                ),
                (
                    "assistant",
                    "Because the String is dropped when the function returns, so the reference "
                    "would dangle. Return the String itself.",
                ),
                ("user", "And with a &'static str?"),
                ("assistant", "A string literal is &'static str, so returning it is fine."),
            ],
        ),
        (
            "Portuguese greeting",
            [("user", "Translate 'good morning' to Portuguese."), ("assistant", "Bom dia.")],
        ),
        ("Old chat", [("user", "Hello there"), ("assistant", "Hi! How can I help?")]),
    ]


@pytest.mark.parametrize("name", ["sharegpt.json", "sharegpt.jsonl"])
def test_sharegpt_json_and_jsonl(name):
    fmt, convs, _ = parsed(FIXTURES / "sharegpt" / name)
    assert fmt == "sharegpt"
    expected = {
        "sharegpt.json": [
            (
                None,
                [
                    ("user", "Summarize the plot of Hamlet in two sentences."),
                    (
                        "assistant",
                        "Prince Hamlet seeks revenge on his uncle Claudius, who murdered Hamlet's "
                        "father to seize the throne. His hesitation and feigned madness lead to a "
                        "tragedy in which nearly everyone dies.",
                    ),
                    ("user", "Who is Ophelia?"),
                    ("assistant", "Polonius's daughter, whom Hamlet once courted."),
                ],
            ),
            (
                None,
                [("system", "You are a terse assistant."), ("user", "2+2?"), ("assistant", "4")],
            ),
        ],
        "sharegpt.jsonl": [
            (
                None,
                [
                    ("system", "You can call tools."),
                    ("user", "Weather in Oslo?"),
                    ("assistant", "It is -3 °C in Oslo."),
                ],
            ),
            (None, [("user", "Name a prime above 100."), ("assistant", "101")]),
        ],
    }
    assert convs == expected[name]


def test_openai_jsonl_roles_parts_and_tool_turns():
    fmt, convs, _ = parsed(FIXTURES / "openai" / "train.jsonl")
    assert fmt == "openai-jsonl"
    assert [messages for _, messages in convs] == [
        [
            ("system", "Marv is a factual chatbot that is also sarcastic."),
            ("user", "What's the capital of France?"),
            ("assistant", "Paris, as if everyone doesn't know that already."),
        ],
        [
            ("system", "Answer in one word."),
            ("user", "Opposite of hot?"),
            ("assistant", "Warm."),
            ("user", "Try again."),
            ("assistant", "Cold."),
        ],
        [
            ("user", "What is the weather in San Francisco?"),
            ("assistant", "It is 21 degrees celsius in San Francisco, CA"),
        ],
        [("user", "What is in this image?"), ("assistant", "A cat asleep on a keyboard.")],
    ]


def test_oterm_database(tmp_path):
    db = build_db(tmp_path, "oterm_store.sql", "store.db")
    assert parsed(db) == (
        "oterm",
        [
            (
                "bash one-liners",
                [
                    ("system", "You are a shell expert. Answer with commands."),
                    ("user", "Count the lines of every .py file under src/"),
                    ("assistant", "find src -name '*.py' | xargs wc -l"),
                    ("user", "Now sort them by size."),
                    ("assistant", "find src -name '*.py' | xargs wc -l | sort -n"),
                ],
            ),
            (
                "chat #2 - qwen3:4b",
                [("user", "What time is it in Tokyo?"), ("assistant", "It is 21:00 in Tokyo.")],
            ),
        ],
        [],
    )


def test_elia_database_with_naive_utc_timestamps(tmp_path):
    db = build_db(tmp_path, "elia.sql", "elia.sqlite")
    fmt, convs, _ = parsed(db)
    assert fmt == "elia"
    assert convs[0] == (
        "Regex for dates",
        [
            ("system", "You are a helpful assistant named Elia."),
            ("user", "A regex for ISO dates like 2024-05-20?"),
            ("assistant", "\\d{4}-\\d{2}-\\d{2}"),
        ],
    )
    assert convs[1][1][2] == (
        "assistant",
        "Soft rain on the roof\nthe gutters hum an old song\nthe cat does not care",
    )
    with parse_file(db) as pf:
        assert next(pf.conversations).messages[1].created_at == "2024-05-20T08:01:12.100+00:00"


def test_llm_logs_database_groups_responses_by_conversation(tmp_path):
    db = build_db(tmp_path, "llm_logs.sql", "logs.db")
    fmt, convs, _ = parsed(db)
    assert fmt == "llm"
    assert convs == [
        (
            "Explain SQLite WAL mode",
            [
                ("system", "Be brief."),  # once: the second response repeats the same system
                ("user", "Explain SQLite WAL mode in one paragraph"),
                (
                    "assistant",
                    "WAL appends changes to a separate log so readers never block the writer; "
                    "a checkpoint later copies them back.",
                ),
                ("user", "When does the checkpoint run?"),
                ("assistant", "By default when the WAL reaches 1000 pages."),
            ],
        ),
        (
            "Write a limerick",
            [
                ("user", "Write a limerick about a cat who codes"),
                (
                    "assistant",
                    "A cat with a laptop named Lou\nwrote Rust in the small hours till two",
                ),
            ],
        ),
    ]


def test_sqlite_conversation_limits(tmp_path):
    db = build_db(tmp_path, "oterm_store.sql", "store.db")
    with pytest.raises(BadInput, match=r"store\.db: message 6: conversation larger than the limit"):
        parsed(db, limits=ImportLimits(max_conversation_messages=3))
    with pytest.raises(BadInput, match=r"store\.db: more than 1 conversations"):
        parsed(db, limits=ImportLimits(max_conversations=1))


def test_sqlite_file_is_never_modified_nor_given_side_files(tmp_path):
    db = build_db(tmp_path, "llm_logs.sql", "logs.db")
    with sqlite3.connect(db) as conn:  # llm-style WAL database, closed cleanly
        conn.execute("PRAGMA journal_mode=WAL")
    before = (db.read_bytes(), db.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    parsed(db)
    assert (
        db.read_bytes(),
        db.stat().st_mtime_ns,
        sorted(p.name for p in tmp_path.iterdir()),
    ) == before


def test_sqlite_with_a_live_writer_sees_its_committed_wal(tmp_path):
    db = build_db(tmp_path, "llm_logs.sql", "logs.db")
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # the new row stays in logs.db-wal
    writer.execute(
        "INSERT INTO responses (id, prompt, response, conversation_id, datetime_utc) "
        "VALUES ('01j9', 'new question', 'new answer', '01j9c', '2024-07-01T00:00:00')"
    )
    writer.commit()
    try:
        _, convs, _ = parsed(db)
    finally:
        writer.close()
    assert convs[-1] == (None, [("user", "new question"), ("assistant", "new answer")])


def test_transcripts_markdown_and_plain():
    assert parsed(FIXTURES / "transcripts" / "chat.md") == (
        "transcript",
        [
            (
                "Fixing a flaky test",
                [
                    (
                        "user",
                        "My pytest suite fails one run in ten with `database is locked`.\n"
                        "Any idea why?",
                    ),
                    (
                        "assistant",
                        "Two connections are writing at once. Open the write transaction with "
                        "`BEGIN IMMEDIATE`:\n\n```python\n"
                        'conn.execute("BEGIN IMMEDIATE")\n## User\n'
                        "this heading is inside a code block, not a new turn\n```\n\n## Summary\n\n"
                        "Use one writer at a time.",
                    ),
                    ("user", "That fixed it, thanks!"),
                ],
            )
        ],
        [],
    )
    assert parsed(FIXTURES / "transcripts" / "chat.txt")[1] == [
        (
            None,
            [
                ("user", "what's a good name for a sourdough starter?"),
                ("assistant", 'How about "Clint Yeastwood"?\nIt\'s a classic.'),
                ("user", "ha, perfect"),
                ("assistant", "Enjoy your bread!"),
            ],
        )
    ]
    assert parsed(FIXTURES / "transcripts" / "bom_crlf.txt")[1] == [
        (None, [("user", "hello from a BOM file"), ("assistant", "hi back")])
    ]


def test_utf16_with_bom_is_accepted(tmp_path):
    source = FIXTURES / "chatgpt" / "conversations.json"
    for codec in ("utf-16", "utf-16-be"):
        target = tmp_path / f"{codec}.json"
        bom = b"\xfe\xff" if codec == "utf-16-be" else b""
        target.write_bytes(bom + source.read_text(encoding="utf-8").encode(codec))
        assert parsed(target) == parsed(source)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("chatgpt/conversations.json", "chatgpt"),
        ("chatgpt_sharded", "chatgpt"),
        ("claude/conversations.json", "claude"),
        ("claude/branched.json", "claude"),
        ("openwebui/chat-export-1718100000000.json", "openwebui"),
        ("sharegpt/sharegpt.json", "sharegpt"),
        ("sharegpt/sharegpt.jsonl", "sharegpt"),
        ("openai/train.jsonl", "openai-jsonl"),
        ("transcripts/chat.md", "transcript"),
        ("transcripts/chat.txt", "transcript"),
    ],
)
def test_detect_from_content_not_name(tmp_path, relative, expected):
    source = FIXTURES / relative
    if source.is_dir():
        assert detect_format(source) == expected
        return
    misnamed = tmp_path / "export.bin"  # the extension says nothing
    shutil.copyfile(source, misnamed)
    assert detect_format(misnamed) == expected


@pytest.mark.parametrize(
    ("script", "expected"),
    [("oterm_store.sql", "oterm"), ("elia.sql", "elia"), ("llm_logs.sql", "llm")],
)
def test_detect_sqlite_apps(tmp_path, script, expected):
    assert detect_format(build_db(tmp_path, script, "data.bin")) == expected


def test_detect_claude_zip_and_lpm_bundle(tmp_path):
    assert detect_format(zip_dir(FIXTURES / "claude", tmp_path / "data-2024.zip")) == "claude"
    bundle = tmp_path / "memory.lpm"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "lpm-bundle", "format_version": 1}))
        zf.writestr("memory.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert detect_format(bundle) == "lpm-bundle"
    with pytest.raises(BadInput, match=r"memory\.lpm: this is an lpm memory bundle"):
        parse_file(bundle)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'[{"foo": 1}]',
            r"x\.json: item 1: JSON, but not a recognised chat export\. supported: chatgpt",
        ),
        (b"[]", r"x\.json: the file holds an empty JSON array"),
        (b"just some notes\nnothing else\n", r"x\.json: not a recognised chat log\. supported: "),
        (b"", r"x\.json: the file is empty"),
        (b"SQLite format 3\x00" + b"\x00" * 200, r"x\.json: cannot (open|read) the database"),
        (b"\x00\x00\x00\x01binary", r"x\.json: binary data or UTF-16 without a byte-order mark"),
    ],
)
def test_unknown_content_is_refused_with_the_supported_list(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message):
        detect_format(path)


def test_missing_and_special_paths(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        parse_file(tmp_path / "absent.json")
    with pytest.raises(BadInput, match="holds no conversations.json"):
        parse_file(tmp_path)
    with pytest.raises(BadInput, match="not a regular file"):
        parse_file("/dev/zero")


# --------------------------------------------------------------------------- errors name the place


def _chatgpt_with(mutate) -> bytes:
    data = json.loads((FIXTURES / "chatgpt" / "conversations.json").read_text())
    mutate(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d[0]["mapping"]["2e3f-u3"]["message"]["content"]["parts"].append(7),
            r"c\.json: item 1 \(conversation 'Lisbon trip'\), "
            r"mapping\['2e3f-u3'\]\.message\.content\.parts\[2\]: expected a string, got a number",
        ),
        (
            lambda d: d[1]["mapping"]["aaa2f1e0-u1"]["message"].pop("author"),
            r"item 2 \(conversation 'Sourdough starter'\), "
            r"mapping\['aaa2f1e0-u1'\]\.message: missing field 'author'",
        ),
        (
            lambda d: d[0].update(current_node="nope"),
            r"item 1 .*current_node: refers to a missing node 'nope'",
        ),
        (
            lambda d: d[1]["mapping"]["aaa1c4e5-0f7a-4b1c-9d2e-3f4a5b6c7d8e"].update(
                parent="5e6f7a8b-a1"
            ),
            r"parent links form a cycle",
        ),
        (
            lambda d: d[0].update(create_time="yesterday"),
            r"create_time: 'yesterday' is not an ISO 8601 date",
        ),
    ],
)
def test_bad_values_name_file_record_and_path(tmp_path, mutate, message):
    path = tmp_path / "c.json"
    path.write_bytes(_chatgpt_with(mutate))
    with pytest.raises(BadInput, match=message) as caught:
        parsed(path)
    assert "\n" not in str(caught.value)


def test_lazy_errors_surface_mid_stream(tmp_path):
    """Documented behaviour: conversations before a bad one are yielded first, so the writer
    must consume everything inside one transaction."""
    path = tmp_path / "c.json"
    path.write_bytes(_chatgpt_with(lambda d: d[1].update(mapping=[])))
    with parse_file(path) as pf:
        assert next(pf.conversations).title == "Lisbon trip"
        with pytest.raises(BadInput, match=r"item 2 .*mapping: expected an object, got a list"):
            next(pf.conversations)


# --------------------------------------------------------------------------- streaming & memory


def _chatgpt_conversation(i: int, turns: int, words: int) -> dict:
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for j in range(turns):
        node = f"c{i}n{j}"
        text = " ".join(f"word{(i * 7 + j + k) % 97}" for k in range(words))
        mapping[parent]["children"].append(node)
        mapping[node] = {
            "id": node,
            "parent": parent,
            "children": [],
            "message": {
                "id": node,
                "author": {
                    "role": "user" if j % 2 == 0 else "assistant",
                    "name": None,
                    "metadata": {},
                },
                "create_time": 1.7e9 + i * 100 + j,
                "content": {"content_type": "text", "parts": [text]},
                "metadata": {"model_slug": "gpt-4o", "citations": []},
                "recipient": "all",
            },
        }
        parent = node
    return {
        "title": f"c{i}",
        "create_time": 1.7e9,
        "mapping": mapping,
        "current_node": parent,
        "id": f"id{i}",
    }


def test_large_export_streams_with_bounded_memory(tmp_path):
    path = tmp_path / "conversations.json"
    count, turns = 250, 20
    with open(path, "w") as fh:  # ~8 MB, written incrementally
        fh.write("[")
        for i in range(count):
            fh.write(("," if i else "") + json.dumps(_chatgpt_conversation(i, turns, 200)))
        fh.write("]")
    size = path.stat().st_size
    seen: list[int] = []
    tracemalloc.start()
    try:
        with parse_file(path, progress=lambda done, total: seen.append(done)) as pf:
            first_at = None
            messages = 0
            for conversation in pf.conversations:
                first_at = seen[-1] if first_at is None else first_at
                messages += len(conversation.messages)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert messages == count * turns
    assert first_at is not None and first_at < size / 4  # yielded long before the end was read
    assert seen[-1] == size
    # One conversation as objects plus ~two 1 MiB text chunks, never the whole 8 MB file.
    assert peak < 6 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file"


def test_closing_midway_releases_the_file(tmp_path):
    archive = zip_dir(FIXTURES / "chatgpt", tmp_path / "export.zip")
    proc = psutil.Process()
    pf = parse_file(archive)
    next(pf.conversations)
    assert any(f.path == str(archive) for f in proc.open_files())
    pf.close()
    assert not any(f.path == str(archive) for f in proc.open_files())
    unstarted = parse_file(archive)  # the zip is opened (and vetted) before the first item
    assert any(f.path == str(archive) for f in proc.open_files())
    unstarted.close()
    assert not any(f.path == str(archive) for f in proc.open_files())


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda kids: (
                st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
            ),
            max_leaves=12,
        ),
        max_size=6,
    ),
    chunk=st.integers(min_value=1, max_value=64),
    indent=st.sampled_from([None, 0, 2]),
)
def test_array_streamer_equals_json_loads_for_any_chunking(items, chunk, indent):
    text = json.dumps(items, indent=indent)
    reader = TextReader(io.BytesIO(text.encode()), "t.json", chunk_bytes=chunk)
    assert [r.value for r in iter_records(reader, ImportLimits())] == json.loads(text)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3),
        min_size=1,
        max_size=6,
    ),
    chunk=st.integers(min_value=1, max_value=32),
)
def test_jsonl_streamer_equals_per_line_loads(rows, chunk):
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    reader = TextReader(io.BytesIO(text.encode()), "t.jsonl", chunk_bytes=chunk)
    records = list(iter_records(reader, ImportLimits()))
    assert [r.value for r in records] == rows
    assert [r.record for r in records] == [f"line {i}" for i in range(1, len(rows) + 1)]


# --------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize(
    ("text", "depth"),
    [("[]", 1), ('{"a": [[{}]]}', 4), ('["[[[", "]]]]]", [1]]', 2), (r'["\"[", {"k\\": [2]}]', 3)],
)
def test_json_depth_ignores_brackets_in_strings(text, depth):
    json.loads(text)
    assert json_depth(text) == depth


def test_clean_text_strips_controls_and_lone_surrogates():
    assert clean_text("a\x00b\x1b[31mc\td\ne\ud800f\u200bg") == "ab[31mc\td\ne\ufffdf\u200bg"
    assert clean_text("plain é 🍞") == "plain é 🍞"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1714559400.5, "2024-05-01T10:30:00.500+00:00"),  # seconds (ChatGPT)
        (1714559400500, "2024-05-01T10:30:00.500+00:00"),  # milliseconds (JavaScript)
        (1714559400500000000, "2024-05-01T10:30:00.500+00:00"),  # nanoseconds
        ("2024-05-01T12:30:00.5+02:00", "2024-05-01T10:30:00.500+00:00"),
        ("2024-05-01 10:30:00.500000", "2024-05-01T10:30:00.500+00:00"),  # naive = UTC
        ("2024-05-01T10:30:00.500Z", "2024-05-01T10:30:00.500+00:00"),
        (None, None),
    ],
)
def test_timestamps_normalise_to_iso_utc(value, expected):
    assert iso_utc(value, Place("f"), "t") == expected


@pytest.mark.parametrize("value", [-1, 1e30, True, "soon", [1]])
def test_bad_timestamps_are_refused(value):
    with pytest.raises(BadInput, match=r"^f: t: "):
        iso_utc(value, Place("f"), "t")


def test_limits_validate_their_values():
    with pytest.raises(ValueError, match="max_conversations"):
        ImportLimits(max_conversations=0)
    with pytest.raises(ValueError, match="max_json_depth"):
        ImportLimits(max_json_depth=3)


def test_message_limit_and_conversation_limit(tmp_path):
    source = FIXTURES / "chatgpt" / "conversations.json"
    with pytest.raises(BadInput, match=r"longer than the limit of 20.*max_message_chars"):
        parsed(source, limits=ImportLimits(max_message_chars=20))
    with pytest.raises(BadInput, match=r"item 3: more than 2 conversations.*max_conversations"):
        parsed(source, limits=ImportLimits(max_conversations=2))


def test_zip_refusals(tmp_path):
    conversations = (FIXTURES / "chatgpt" / "conversations.json").read_bytes()
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("conversations.json", conversations)
        zf.writestr("../../.bashrc", b"echo pwned")
    with pytest.raises(BadInput, match=r"slip\.zip: unsafe member name '\.\./\.\./\.bashrc'"):
        detect_format(slip)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("conversations.json", b"[" + b" " * (8 * 2**20) + b"]")
    with pytest.raises(
        BadInput, match=r"bomb\.zip/conversations\.json: compression ratio .* zip bomb"
    ):
        detect_format(bomb)
    crowded = tmp_path / "crowded.zip"
    with zipfile.ZipFile(crowded, "w") as zf:
        zf.writestr("conversations.json", conversations)
    data = bytearray(crowded.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 0xFFFE, 0xFFFE)  # claims 65534 entries
    crowded.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=r"crowded\.zip: central directory too large"):
        detect_format(crowded, ImportLimits(max_zip_members=1000))


def test_the_importers_role_type_lists_the_chat_roles():
    """Parsers type roles as a Literal; the values are the one ``ROLES`` of the chat encoder."""
    from typing import get_args

    from lpm_local.chat.encoding import ROLES
    from lpm_local.data.importers.base import Role

    assert get_args(Role) == ROLES
