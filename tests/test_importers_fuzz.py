"""R11: hostile and broken files never escape as anything but one ``BadInput`` line.

A deterministic corpus of malformed files, built from the real-structure fixtures: deep nesting,
invalid UTF-8, BOM/UTF-16/UTF-32, lone surrogates, NUL, duplicate keys, NaN/Infinity, wrong
types, missing fields, truncation, byte flips, 10^6 empty conversations, zip bombs, zip-slip
names, 0-byte and sparse huge files, hostile SQLite schemas and transcripts; plus hypothesis
mutations. Each file is detected and fully read: the only exception allowed is ``BadInput``
(naming the file, on one line), and each takes less than 10 s. The full corpus (>= 1,000
files) is ``slow``; every tenth case runs by default.
"""

from __future__ import annotations

import codecs
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lpm_local.data.importers import ImportLimits, detect_format, parse_file
from lpm_local.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
CASE_SECONDS = 10.0
JSON_FIXTURES = [
    "chatgpt/conversations.json",
    "claude/conversations.json",
    "claude/branched.json",
    "openwebui/chat-export-1718100000000.json",
    "sharegpt/sharegpt.json",
    "sharegpt/sharegpt.jsonl",
    "openai/train.jsonl",
]
TEXT_FIXTURES = [
    *JSON_FIXTURES,
    "transcripts/chat.md",
    "transcripts/chat.txt",
    "markdown/oterm-export.md",
    "markdown/llm-logs.md",
]
SQL_FIXTURES = ["oterm_store.sql", "elia.sql", "llm_logs.sql"]
DEFAULT = ImportLimits()


@dataclass
class Case:
    category: str
    name: str
    build: Callable[[Path], Path]  # writes the hostile input under a directory, returns its path
    limits: ImportLimits = field(default=DEFAULT)

    def __repr__(self) -> str:
        return f"{self.category}:{self.name}"


def consume(path: Path, limits: ImportLimits) -> str:
    """Detect and read everything; 'ok' or 'refused'. Anything else propagates (test fails)."""
    try:
        detect_format(path, limits)
        with parse_file(path, limits=limits) as pf:
            for conversation in pf.conversations:
                title = conversation.title or ""
                assert "\x00" not in title and "\n" not in title
                title.encode("utf-8")  # no lone surrogates survive
                for message in conversation.messages:
                    assert message.role in ("system", "user", "assistant")
                    assert message.content.strip()
                    message.content.encode("utf-8")  # no lone surrogates survive
                    assert "\x00" not in message.content
        return "ok"
    except BadInput as exc:
        text = str(exc)
        assert "\n" not in text and "\r" not in text, text
        assert path.name in text or str(path) in text, text
        return "refused"


def run_case(case: Case, tmp_path: Path) -> str:
    path = case.build(tmp_path)
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = consume(path, case.limits)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # CPU time is what the parser spends; wall time also counts the other engineers' jobs on
    # this shared 2-core machine, so it gets headroom.
    assert cpu < CASE_SECONDS and wall < 3 * CASE_SECONDS, (
        f"{case}: {cpu:.1f}s cpu, {wall:.1f}s wall"
    )
    return outcome


# --------------------------------------------------------------------------- builders


def fixture_bytes(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


def writer(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return build


def lazy_writer(name: str, make: Callable[[], bytes]) -> Callable[[Path], Path]:
    return lambda tmp: writer(name, make())(tmp)


def sqlite_bytes(script: str, extra_sql: str = "") -> bytes:
    conn = sqlite3.connect(":memory:")
    conn.executescript((FIXTURES / "sqlite" / script).read_text() + extra_sql)
    data = conn.serialize()
    conn.close()
    return data


def zip_bytes(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", method) as zf:
        warnings.simplefilter("ignore")  # duplicate names are one of the attacks
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def load_records(relative: str) -> tuple[list, bool]:
    """The fixture as a list of records, and whether it is JSONL."""
    text = fixture_bytes(relative).decode("utf-8")
    if relative.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()], True
    return json.loads(text), False


def dump_records(records: list, jsonl: bool) -> str:
    if jsonl:
        return "\n".join(json.dumps(r) for r in records) + "\n"
    return json.dumps(records)


def all_paths(value, prefix=()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += all_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += all_paths(child, prefix + (index,))
    return paths


def set_at(root, path: tuple, new):
    if not path:
        return new
    target = root
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return root


SENTINEL = "\u2603SENTINEL\u2603"
ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2.5,
    "",
    "x",
    [],
    {},
    [1, "a"],
    {"a": 1},
    "\ud800",
    "\x00\x1b[2J",
    10**30,
]


def structural_case(category: str, relative: str, seed: int) -> Case:
    rng = random.Random(f"{category}-{relative}-{seed}")
    records, jsonl = load_records(relative)
    paths = all_paths(records)[1:]
    path = rng.choice(paths)
    raw: str | None = None
    if category == "wrong-types":
        records = set_at(records, path, rng.choice(ODD_VALUES))
    elif category == "missing-fields":
        dict_paths = [
            p for p in all_paths(records) if isinstance(_get(records, p), dict) and _get(records, p)
        ]
        target = rng.choice(dict_paths)
        _get(records, target).pop(rng.choice(list(_get(records, target))))
    else:
        replacement = {
            "duplicate-keys": lambda: _duplicate_key(_get(records, path), rng),
            "nan": lambda: rng.choice(
                ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 5000]
            ),
            "deep-nesting": lambda: _nested(rng.choice([65, 200, 5000, 200_000]), rng),
        }[category]()
        records = set_at(records, path, SENTINEL)
        raw = dump_records(records, jsonl).replace(json.dumps(SENTINEL), replacement, 1)
    if raw is None:
        raw = dump_records(records, jsonl)
    data = raw.encode("utf-8", "surrogatepass")
    return Case(category, f"{relative}#{seed}", writer(Path(relative).name, data))


def _get(root, path):
    for key in path:
        root = root[key]
    return root


def _duplicate_key(value, rng) -> str:
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        body = json.dumps(value)[1:-1]
        return "{" + json.dumps(key) + ": 1, " + body + "}"
    return '{"a": 1, "a": 2}'


def _nested(depth: int, rng) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


def byte_case(category: str, relative: str, seed: int) -> Case:
    rng = random.Random(f"{category}-{relative}-{seed}")
    data = bytearray(fixture_bytes(relative))
    at = rng.randrange(len(data))
    if category == "invalid-utf8":
        bad = rng.choice(
            [
                b"\xff",
                b"\xc3\x28",
                b"\xed\xa0\x80",
                b"\xc0\xaf",
                b"\xe2\x82",
                b"\xf8\x88\x80\x80\x80",
                b"\x80",
            ]
        )
        data[at:at] = bad
    elif category == "nul":
        data[at:at] = b"\x00" * rng.choice([1, 2, 64])
    elif category == "truncated":
        del data[at:]
        if not data:
            data = bytearray(b"[")
    elif category == "byte-flips":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif category == "bom":
        data[at:at] = codecs.BOM_UTF8
    return Case(category, f"{relative}#{seed}", writer(Path(relative).name, bytes(data)))


def surrogate_case(relative: str, seed: int) -> Case:
    """A lone surrogate escape inside a string value: accepted, replaced by U+FFFD."""
    rng = random.Random(f"surrogate-{relative}-{seed}")
    records, jsonl = load_records(relative)
    strings = [p for p in all_paths(records)[1:] if isinstance(_get(records, p), str)]
    path = rng.choice(strings)
    records = set_at(
        records, path, _get(records, path) + rng.choice(["\ud800", "\udfff", "\ud83d x"])
    )
    return Case(
        "lone-surrogates",
        f"{relative}#{seed}",
        writer(Path(relative).name, dump_records(records, jsonl).encode()),
    )


def encoding_cases() -> list[Case]:
    cases = []
    for relative in TEXT_FIXTURES:
        text = fixture_bytes(relative).decode("utf-8")
        name = Path(relative).name
        for codec, bom in [
            ("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
            ("utf-16-le", b""), ("utf-16-be", b""), ("utf-32-le", codecs.BOM_UTF32_LE),
            ("utf-8", codecs.BOM_UTF8), ("utf-8", codecs.BOM_UTF8 * 2), ("latin-1", b""),
            ("cp1252", b""),
        ]:  # fmt: skip
            data = bom + text.encode(codec, errors="replace")
            cases.append(Case("bom-utf16", f"{relative}:{codec}:{len(bom)}", writer(name, data)))
    return cases


def sqlite_cases() -> list[Case]:
    edits = {
        "oterm_store.sql": [
            "UPDATE message SET text = x'ff00fe' WHERE id = 2;",
            "UPDATE message SET author = 42 WHERE id = 1;",
            "UPDATE message SET text = CAST(x'c328' AS TEXT) WHERE id = 1;",
            "UPDATE message SET author = 'robot' WHERE id = 1;",
            "UPDATE chat SET name = x'00' WHERE id = 1;",
            "DROP TABLE message; CREATE VIEW message AS WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL "
            "SELECT i + 1 FROM r) SELECT i AS id, 1 AS chat_id, 'user' AS author, 'x' AS text "
            "FROM r;",
            "DROP TABLE chat;",
            "UPDATE message SET text = char(0) || 'hi' || char(27) || '[2J' WHERE id = 1;",
            "UPDATE message SET chat_id = 999;",
            "UPDATE chat SET system = 3.5;",
            "UPDATE message SET text = printf('%.*c', 9000000, 'a') WHERE id = 5;",  # > SQLite cap
        ],
        "elia.sql": [
            "UPDATE message SET timestamp = 'not a date' WHERE id = 2;",
            "UPDATE message SET timestamp = 99999999999999999999 WHERE id = 2;",
            "UPDATE message SET role = x'75736572' WHERE id = 2;",
            "UPDATE chat SET started_at = x'01';",
            "ALTER TABLE message DROP COLUMN timestamp;",
            "UPDATE message SET content = printf('%.*c', 3000000, 'a') WHERE id = 3;",
        ],
        "llm_logs.sql": [
            "UPDATE responses SET conversation_id = NULL;",
            "UPDATE responses SET datetime_utc = 'yesterday';",
            "UPDATE responses SET prompt = x'deadbeef';",
            "DROP TABLE conversations;",
            "UPDATE conversations SET name = 7;",
            "UPDATE responses SET system = NULL, prompt = NULL, response = NULL;",
        ],
    }
    cases = []
    for script, changes in edits.items():
        for index, change in enumerate(changes):
            build = lazy_writer("app.db", lambda s=script, c=change: sqlite_bytes(s, c))
            cases.append(Case("sqlite-schema", f"{script}#{index}", build))
        for seed in range(12):
            cases.append(
                Case(
                    "sqlite-corrupt",
                    f"{script}#{seed}",
                    lazy_writer("app.db", _corrupt_db(script, seed)),
                )
            )
    return cases


def _corrupt_db(script: str, seed: int) -> Callable[[], bytes]:
    def make() -> bytes:
        rng = random.Random(f"db-{script}-{seed}")
        data = bytearray(sqlite_bytes(script))
        if seed % 3 == 0:
            del data[rng.randrange(100, len(data)) :]
        else:
            for _ in range(rng.randint(1, 30)):
                data[rng.randrange(16, len(data))] = rng.randrange(256)
        return bytes(data)

    return make


def zip_cases() -> list[Case]:
    conv = fixture_bytes("chatgpt/conversations.json")
    slip_names = [
        "../conversations.json", "/etc/conversations.json", "C:\\x\\conversations.json",
        "a/../../conversations.json", "..\\..\\evil.txt", "c:conversations.json", "x/./../../y",
    ]  # fmt: skip
    cases = [
        Case(
            "zip-slip",
            name,
            writer("slip.zip", zip_bytes([("conversations.json", conv), (name, b"x")])),
        )
        for name in slip_names
    ]
    cases.append(
        Case(
            "zip-slip",
            "duplicate",
            writer("dup.zip", zip_bytes([("conversations.json", conv)] * 2)),
        )
    )
    cases += [
        Case("zip-bomb", "ratio", lazy_writer("bomb.zip", lambda: _zeros_zip(64 * 2**20))),
        Case(
            "zip-bomb",
            "declared-huge",
            lazy_writer("huge.zip", lambda: _patch_sizes(conv, 3 * 2**30)),
        ),
        Case("zip-bomb", "lying-small", lazy_writer("lie.zip", lambda: _patch_sizes(conv, 100))),
        Case(
            "zip-bomb",
            "nested",
            writer(
                "nested.zip", zip_bytes([("inner.zip", zip_bytes([("conversations.json", conv)]))])
            ),
        ),
        Case("zip-bomb", "many-members-claimed", lazy_writer("crowd.zip", _claimed_entries)),
        Case(
            "zip-bomb",
            "many-members",
            lazy_writer("many.zip", lambda: zip_bytes([(f"f{i}", b"") for i in range(3000)])),
            ImportLimits(max_zip_members=1000),
        ),
        Case("zip-bomb", "encrypted-flag", lazy_writer("enc.zip", lambda: _encrypted_flag(conv))),
        Case("zip-bomb", "empty-zip", writer("empty.zip", zip_bytes([]))),
    ]
    return cases


def _zeros_zip(size: int) -> bytes:
    """A deflated member of ``size`` zero bytes, written without holding it in memory."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("conversations.json", "w", force_zip64=True) as member:
            block = b"\x00" * 2**20
            for _ in range(size // len(block)):
                member.write(block)
    return buf.getvalue()


def _patch_sizes(data: bytes, size: int) -> bytes:
    """Make the local and central headers lie about the uncompressed size."""
    raw = bytearray(zip_bytes([("conversations.json", data)]))
    value = min(size, 0xFFFFFFFE).to_bytes(4, "little")
    local = raw.find(b"PK\x03\x04")
    raw[local + 22 : local + 26] = value
    central = raw.find(b"PK\x01\x02")
    raw[central + 24 : central + 28] = value
    return bytes(raw)


def _claimed_entries() -> bytes:
    raw = bytearray(zip_bytes([("conversations.json", b"[]")]))
    end = raw.rfind(b"PK\x05\x06")
    raw[end + 8 : end + 12] = (0xFFFE).to_bytes(2, "little") * 2
    raw[end + 12 : end + 16] = (2**31).to_bytes(4, "little")
    return bytes(raw)


def _encrypted_flag(data: bytes) -> bytes:
    raw = bytearray(zip_bytes([("conversations.json", data)]))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(sig)
        raw[at + offset] |= 0x01
    return bytes(raw)


def size_cases() -> list[Case]:
    def sparse(name: str, size: int, head: bytes = b"") -> Callable[[Path], Path]:
        def build(tmp: Path) -> Path:
            path = tmp / name
            with open(path, "wb") as fh:
                fh.write(head)
                fh.truncate(size)
            return path

        return build

    chatgpt_empty = b'{"title":"","create_time":null,"mapping":{},"current_node":null}'
    million = lambda item, sep=b",": lambda: b"[" + sep.join([item] * 1_000_000) + b"]"  # noqa: E731
    return [
        Case("size", "zero-bytes", writer("empty.json", b"")),
        Case("size", "whitespace-only", writer("blank.json", b" \n\t " * 1000)),
        Case("size", "sparse-3GiB", sparse("huge.json", 3 * 2**30)),
        Case("size", "sparse-1.5GiB-zeros", sparse("zeros.json", 3 * 2**29)),
        Case(
            "size",
            "sparse-1.5GiB-json-head",
            sparse("head.json", 3 * 2**29, b'[{"title": "x", "mapping": {'),
        ),
        Case(
            "size", "sparse-1.5GiB-jsonl-head", sparse("head.jsonl", 3 * 2**29, b'{"messages": [')
        ),
        Case(
            "size",
            "sparse-1.5GiB-transcript",
            sparse("t.md", 3 * 2**29, b"## User\nhi\n## Assistant\n"),
        ),
        Case(
            "size",
            "sparse-over-limit",
            sparse("big.json", 2**20 + 1, b"["),
            ImportLimits(max_file_bytes=2**20),
        ),
        Case(
            "size",
            "object-blowup-in-one-item",
            lazy_writer("o.json", lambda: b"[[" + b"{}," * 4_000_000 + b"{}]]"),
        ),
        Case(
            "size",
            "object-blowup-jsonl",
            lazy_writer("o.jsonl", lambda: b'{"messages": [' + b"[]," * 4_000_000 + b"[]]}\n"),
        ),
        Case("empty-conversations", "1e6-empty-objects", lazy_writer("e.json", million(b"{}"))),
        Case(
            "empty-conversations",
            "1e6-chatgpt-default-limit",
            lazy_writer("e.json", million(chatgpt_empty)),
        ),
        Case(
            "empty-conversations",
            "1e6-chatgpt-raised-limit",
            lazy_writer("e.json", million(chatgpt_empty)),
            ImportLimits(max_conversations=2_000_000),
        ),
        Case(
            "empty-conversations",
            "1e6-jsonl",
            lazy_writer("e.jsonl", lambda: b'{"messages": []}\n' * 1_000_000),
        ),
        Case(
            "empty-conversations",
            "1e6-sharegpt",
            lazy_writer("e.json", million(b'{"conversations": []}')),
        ),
    ]


def transcript_cases() -> list[Case]:
    raw = [
        ("endless-line", lambda: b"User: hi\nAssistant: " + b"a" * (3 * 10**6)),
        ("controls", lambda: "User: \x1b[31mred\x07\x08\nAssistant: ok\x7f\x9b\n".encode()),
        ("only-markers", lambda: b"User:\nAssistant:\n" * 10000),
        ("unclosed-fence", lambda: b"## User\n```\n## Assistant\nnever closed\n"),
        ("nul-later", lambda: b"User: a\nAssistant: b\x00c\n"),
        ("huge-message", lambda: b"## User\n## Assistant\n" + b"word " * 500_000),
        ("many-turns", lambda: b"User: q\nAssistant: a\n" * 200_000),
        ("markup", lambda: b"User: [@click=app.quit]x[/] <|im_start|>system\nAssistant: [/]\n"),
        ("crlf-cr", lambda: b"User: a\r\rAssistant: b\r"),
    ]
    cases = [Case("transcript", name, lazy_writer("t.txt", make)) for name, make in raw]
    # The structured Markdown exports: their markers in hostile arrangements.
    oterm = [
        ("oterm-only-rules", lambda: b"*user*\n" + b"---\n" * 300_000),
        ("oterm-many-turns", lambda: b"*user*\nq\n\n---\n*assistant*\na\n\n---\n" * 150_000),
        ("oterm-endless-line", lambda: b"*user*\nhi\n---\n*assistant*\n" + b"a" * (3 * 10**6)),
        (
            "oterm-controls",
            lambda: "*user*\n\x1b]0;x\x07hi\n---\n*assistant*\n\x9b\n---\n".encode(),
        ),
        ("oterm-tool-only", lambda: b"*tool*\nout\n\n---\n" * 1000),
    ]
    header = b"# 2024-05-01T12:00:00    conversation: c1 id: r1\n\n"
    llm = [
        (
            "llm-many-responses",
            lambda: (header + b"## Prompt\n\nq\n\n## Response\n\na\n\n") * 120_000,
        ),
        (
            "llm-bad-time",
            lambda: b"# 2024-13-45T99:99:99    conversation: c id: r\n\n## Prompt\n\nq\n",
        ),
        ("llm-sections-only", lambda: header + b"## Prompt\n\n## System\n\n## Response\n\n" * 1000),
        ("llm-none-prompt", lambda: header + b"## Prompt\n\n-- none --\n\n## Response\n\n\n"),
        ("llm-endless-line", lambda: header + b"## Prompt\n\n" + b"q" * (3 * 10**6)),
        ("llm-unclosed-fence", lambda: header + b"## Prompt\n\n```\n## Response\nx\n"),
        (
            "llm-many-conversations",
            lambda: b"".join(
                b"# 2024-05-01T12:00:00    conversation: c%d id: r\n\n## Prompt\n\nq\n\n"
                b"## Response\n\na\n\n" % i
                for i in range(120_000)
            ),
        ),
    ]
    cases += [Case("markdown-export", n, lazy_writer("o.md", m)) for n, m in oterm]
    cases += [Case("markdown-export", n, lazy_writer("l.md", m)) for n, m in llm]
    return cases


def build_corpus() -> list[Case]:
    cases: list[Case] = []
    for relative in JSON_FIXTURES:
        for seed in range(25):
            for category in ("wrong-types", "missing-fields"):
                cases.append(structural_case(category, relative, seed))
        for seed in range(6):
            for category in ("duplicate-keys", "nan", "deep-nesting"):
                cases.append(structural_case(category, relative, seed))
            cases.append(surrogate_case(relative, seed))
    for relative in TEXT_FIXTURES:
        for seed in range(8):
            for category in ("invalid-utf8", "nul", "truncated", "byte-flips", "bom"):
                cases.append(byte_case(category, relative, seed))
    cases += encoding_cases() + sqlite_cases() + zip_cases() + size_cases() + transcript_cases()
    return cases


CORPUS = build_corpus()
# The default run: every tenth case, plus the cheap cases of the rarest categories.
CHEAP = {"zip-slip", "size"}
SAMPLE = [
    c for i, c in enumerate(CORPUS)
    if (i % 10 == 0 or c.category in CHEAP) and not any(w in c.name for w in ("GiB", "blowup"))
]  # fmt: skip


def test_corpus_is_big_and_covers_every_category():
    categories = {c.category for c in CORPUS}
    assert len(CORPUS) >= 1000
    assert categories >= {
        "deep-nesting", "invalid-utf8", "bom-utf16", "lone-surrogates", "nul", "duplicate-keys",
        "nan", "wrong-types", "missing-fields", "empty-conversations", "zip-bomb", "zip-slip",
        "size",
    }  # fmt: skip


@pytest.mark.parametrize("case", SAMPLE, ids=repr)
def test_fuzz_sample(case: Case, tmp_path: Path):
    run_case(case, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", CORPUS, ids=repr)
def test_fuzz_full_corpus(case: Case, tmp_path: Path):
    run_case(case, tmp_path)


# --------------------------------------------------------------------------- outcomes that matter


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("zip-slip:../conversations.json", "refused"),
        ("zip-bomb:ratio", "refused"),
        ("zip-bomb:declared-huge", "refused"),
        ("zip-bomb:lying-small", "refused"),
        ("zip-bomb:encrypted-flag", "refused"),
        ("size:zero-bytes", "refused"),
        ("size:sparse-over-limit", "refused"),
        ("size:object-blowup-in-one-item", "refused"),
        ("sqlite-schema:oterm_store.sql#10", "refused"),
        ("empty-conversations:1e6-empty-objects", "refused"),
        ("bom-utf16:chatgpt/conversations.json:utf-16-le:2", "ok"),
        ("bom-utf16:chatgpt/conversations.json:utf-16-le:0", "refused"),
        ("bom-utf16:chatgpt/conversations.json:utf-32-le:4", "refused"),
        ("transcript:controls", "ok"),
        ("transcript:endless-line", "refused"),
    ],
)
def test_specific_outcomes(name: str, expected: str, tmp_path: Path):
    case = next(c for c in CORPUS if repr(c) == name)
    assert run_case(case, tmp_path) == expected


@pytest.mark.parametrize("relative", JSON_FIXTURES)
def test_lone_surrogates_become_replacement_characters(relative: str, tmp_path: Path):
    records, jsonl = load_records(relative)
    text = dump_records(records, jsonl).replace("?", "?\\ud800")  # every fixture asks something
    path = tmp_path / Path(relative).name
    path.write_text(text)
    with parse_file(path) as pf:
        contents = [m.content for c in pf.conversations for m in c.messages]
    assert any("?\ufffd" in c for c in contents)


_HEAVY = """
import json, resource, sys
from lpm_local.errors import BadInput
from lpm_local.data.importers import ImportLimits, parse_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with parse_file(sys.argv[1], limits=ImportLimits(max_conversations=int(sys.argv[2]))) as pf:
        for _ in pf.conversations:
            pass
    outcome = "ok"
except BadInput:
    outcome = "refused"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "extra_mib": (after - before) / 1024}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["zip-bomb:ratio", "size:sparse-1.5GiB-json-head", "size:object-blowup-in-one-item",
     "size:sparse-1.5GiB-jsonl-head", "size:sparse-1.5GiB-transcript",
     "empty-conversations:1e6-chatgpt-raised-limit", "empty-conversations:1e6-jsonl",
     "transcript:endless-line"],
)  # fmt: skip
def test_heavy_cases_stay_under_512_mib(name: str, tmp_path: Path):
    case = next(c for c in CORPUS if repr(c) == name)
    path = case.build(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _HEAVY, str(path), str(case.limits.max_conversations)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["extra_mib"] < 512, report


# --------------------------------------------------------------------------- hypothesis


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=int(os.environ.get("LPM_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data(), relative=st.sampled_from(JSON_FIXTURES))
def test_any_value_anywhere_is_parsed_or_refused(data, relative, tmp_path):
    records, jsonl = load_records(relative)
    path = data.draw(st.sampled_from(all_paths(records)[1:]))
    records = set_at(records, path, data.draw(json_values))
    target = tmp_path / Path(relative).name
    target.write_text(dump_records(records, jsonl))
    consume(target, DEFAULT)


@settings(max_examples=int(os.environ.get("LPM_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    blob=st.binary(max_size=400),
    prefix=st.sampled_from([b"", b"[", b"{", b"PK\x03\x04", b"SQLite format 3\x00", b"## User\n"]),
)
def test_random_bytes_are_parsed_or_refused(blob, prefix, tmp_path):
    target = tmp_path / "random.bin"
    target.write_bytes(prefix + blob)
    consume(target, DEFAULT)
