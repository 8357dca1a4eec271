"""Every importer obeys the same caps (issue 15.3): messages per conversation, conversations,
bytes (file, record, message) and memory.

Each real-structure fixture is read with limits set just under what it holds: every cap that
applies refuses it with one ``BadInput`` line naming the file. Then floods at the default limits
(2 million tiny messages in 11 MB used to take 811 MB and 67 s in the transcript importer) are
refused in a child process whose peak memory is measured.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from lpm_local.data.importers import ImportLimits, parse_file
from lpm_local.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "imports"
TEXT = [
    "chatgpt/conversations.json",
    "claude/conversations.json",
    "openai/train.jsonl",
    "sharegpt/sharegpt.json",
    "sharegpt/sharegpt.jsonl",
    "openwebui/chat-export-1718100000000.json",
    "transcripts/chat.md",
    "transcripts/chat.txt",
    "markdown/oterm-export.md",
    "markdown/llm-logs.md",
]
DATABASES = ["oterm_store.sql", "elia.sql", "llm_logs.sql"]
CAPS = ["messages", "conversations", "file-bytes", "record-chars", "message-chars"]
DEFAULT = ImportLimits()


def _materialise(name: str, tmp_path: Path) -> Path:
    if name.endswith(".sql"):
        path = tmp_path / (name[:-4] + ".db")
        conn = sqlite3.connect(path)
        conn.executescript((FIXTURES / "sqlite" / name).read_text())
        conn.close()
        return path
    return FIXTURES / name


def _read(path: Path, limits: ImportLimits) -> list[tuple[int, int]]:
    """(messages, longest message) per conversation, the whole file read."""
    with parse_file(path, limits=limits) as pf:
        return [
            (len(c.messages), max(len(m.content) for m in c.messages)) for c in pf.conversations
        ]


def _limits_under(cap: str, path: Path, shape: list[tuple[int, int]]) -> ImportLimits | None:
    """Limits one step under what ``path`` holds for ``cap`` (None: the cap cannot be passed)."""
    if cap == "messages":
        return replace(DEFAULT, max_conversation_messages=max(n for n, _ in shape) - 1)
    if cap == "conversations":
        return replace(DEFAULT, max_conversations=len(shape) - 1) if len(shape) > 1 else None
    if cap == "file-bytes":
        return replace(DEFAULT, max_file_bytes=path.stat().st_size - 1)
    if cap == "record-chars":
        # A conversation held at once: 40 characters is less than any fixture's.
        return replace(DEFAULT, max_record_chars=40, max_record_memory=40 * 25)
    longest = max(m for _, m in shape)
    return replace(DEFAULT, max_message_chars=longest - 1)


@pytest.mark.parametrize("cap", CAPS)
@pytest.mark.parametrize("name", TEXT + DATABASES)
def test_each_importer_refuses_a_file_over_each_cap(name: str, cap: str, tmp_path: Path):
    path = _materialise(name, tmp_path)
    shape = _read(path, DEFAULT)
    assert shape and all(n >= 2 for n, _ in shape)
    limits = _limits_under(cap, path, shape)
    if limits is None:
        pytest.skip(f"{name} holds one conversation: no conversations cap to pass")
    with pytest.raises(BadInput) as info:
        _read(path, limits)
    text = str(info.value)
    assert "\n" not in text and path.name in text, text


# The flood is generated in the child, which then reports its peak memory.
_FLOOD = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    from lpm_local.data.importers import parse_file
    from lpm_local.errors import BadInput
    path, kind, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    unit = {
        "transcript": b"you:a\\nai:b\\n",
        "oterm": b"*user*\\na\\n\\n---\\n*assistant*\\nb\\n\\n---\\n",
        "llm": b"# 2024-05-01T12:00:00    conversation: c id: r\\n\\n## Prompt\\n\\na\\n\\n"
               b"## Response\\n\\nb\\n\\n",
    }[kind]
    path.write_bytes(unit * n)
    start = time.monotonic()
    try:
        with parse_file(path) as pf:
            for _ in pf.conversations:
                pass
        outcome = "ok"
    except BadInput as exc:
        outcome = "refused: " + str(exc)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and
    # exec, so a child of a large pytest process would report the parent's peak.
    status = Path("/proc/self/status").read_text()
    peak = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) // 1024
    print(f"{peak} {time.monotonic() - start:.1f} {outcome}")
    """
)


@pytest.mark.parametrize(
    ("kind", "pairs"),
    # Just over the 200,000-message cap, and the 11 MB / 2 million messages.
    [("transcript", 1_000_000), ("oterm", 100_001), ("llm", 100_001)],
)
def test_floods_are_refused_within_the_memory_bound(kind: str, pairs: int, tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", _FLOOD, str(tmp_path / f"flood.{kind}"), kind, str(pairs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    peak_mib, _seconds, outcome = done.stdout.strip().split(" ", 2)
    assert outcome.startswith("refused: ") and "200,000 messages" in outcome, outcome
    assert int(peak_mib) < 512, done.stdout  # the child's own peak: interpreter + parser
