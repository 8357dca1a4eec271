"""oterm's and ``llm logs``' Markdown exports, and two ChatGPT details (issue 13.5).

The fixtures under fixtures/imports/markdown follow the exact structure the two apps write:
oterm's ``ChatExport`` (``*role*``, the text, an empty line, ``---``) and ``llm logs``'
Markdown (``# <time>    conversation: <id> id: <id>``, ``## Prompt``, ``## System``,
``## Response``, with the metadata sections it prints in between).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from builders import chatgpt_conversation
from click.testing import CliRunner

from lpm_local.cli import main
from lpm_local.data.importers import detect_format, parse_file
from lpm_local.storage.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def _read(path: Path):
    with parse_file(path) as pf:
        return pf.format, [
            (c.source_ref, c.created_at, [(m.role, m.content) for m in c.messages])
            for c in pf.conversations
        ]


def test_oterm_export_is_detected_and_read_exactly():
    fmt, convs = _read(FIXTURES / "markdown" / "oterm-export.md")
    assert fmt == "oterm-markdown"
    assert convs == [
        (
            "oterm-markdown",
            None,
            [
                ("system", "You are a helpful gardening assistant."),
                ("user", "How often should I water basil on a sunny balcony?"),
                (
                    "assistant",
                    "Every morning in summer, when the top centimetre of soil is dry.\n\n"
                    "A few tips:\n\n- water the soil, not the leaves\n"
                    "- a saucer helps in heat waves\n\n---\n\nThat is all for now.",
                ),
                # The *tool* message (a tool's output) is skipped.
                ("user", "And in winter?"),
                ("assistant", "Once a week is plenty; basil hates cold wet roots."),
            ],
        )
    ]


def test_llm_logs_markdown_is_detected_and_grouped_by_conversation():
    fmt, convs = _read(FIXTURES / "markdown" / "llm-logs.md")
    assert fmt == "llm-markdown"
    first, second = convs
    assert first[0] == "llm-markdown:01hwz3k8q8d2f7tqk1c0m4v9xe"
    assert first[1] == "2024-05-01T12:00:00.000+00:00"
    assert first[2] == [
        # Printed after the prompt, the system prompt came first; it stays data (a row).
        ("system", "You answer in one short paragraph."),
        ("user", "What is a good name for a sourdough starter?"),
        ("assistant", 'Call it "Clint Yeastwood": it is tough, a little sour and it never quits.'),
        # Prompt fragments and options are metadata; a heading in the answer is text.
        ("user", "And one for a kombucha SCOBY?"),
        (
            "assistant",
            '"Scoby Doo". Shaggy, and it gets into mysteries in the back of the fridge.\n\n'
            "## Heading inside the answer\n\nThis heading is part of the reply.",
        ),
    ]
    assert second[0] == "llm-markdown:01hx1q7r8s9t0v1w2x3y4z5a6b"
    assert second[2] == [
        (
            "user",
            "```markdown\n## Response\nthis heading is inside a fence in the prompt\n```\n"
            "Summarise the fence above.",
        ),
        ("assistant", "It is a fenced block that contains a heading."),  # token usage skipped
    ]


def test_llm_logs_cid_mode_headers_without_conversation_continue_it(tmp_path):
    text = (
        "# 2024-05-01T12:00:00    conversation: 01abc id: 01r1\n\nModel: **m**\n\n"
        "## Prompt\n\nhi\n\n## Response\n\nhello\n\n"
        "# 2024-05-01T12:00:09\n## Prompt\n\n-- none --\n\n## Response\n\nstill here\n\n"
    )
    path = tmp_path / "cid.md"
    path.write_text(text)
    assert _read(path)[1] == [
        (
            "llm-markdown:01abc",
            "2024-05-01T12:00:00.000+00:00",
            [("user", "hi"), ("assistant", "hello\n\nstill here")],
        )
    ]


def test_loose_markdown_is_still_a_transcript():
    assert detect_format(FIXTURES / "transcripts" / "chat.md") == "transcript"


def test_the_cli_imports_both_exports():
    runner = CliRunner()
    expected = {
        "oterm-export.md": "oterm-markdown: added 1 conversations, 5 messages (1 file)",
        "llm-logs.md": "llm-markdown: added 2 conversations, 7 messages (1 file)",
    }
    for name, line in expected.items():
        result = runner.invoke(main, ["import", str(FIXTURES / "markdown" / name)])
        assert result.exit_code == 0, result.output
        assert line in result.output.splitlines()


def _chatgpt_tool_call_export(tmp_path: Path) -> Path:
    conv = chatgpt_conversation(0, 2, random.Random(0))
    mapping = conv["mapping"]
    user, answer = "conv-00000000-n0", "conv-00000000-n1"
    mapping[answer]["message"]["content"]["parts"] = [
        "Let me compute that. \ue200cite\ue202turn0search1\ue201"
    ]

    def node(node_id: str, parent: str, role: str, content: dict, recipient: str = "all"):
        mapping[node_id] = {
            "id": node_id,
            "parent": parent,
            "children": [],
            "message": {
                "id": node_id,
                "author": {"role": role},
                "content": content,
                "metadata": {},
                "recipient": recipient,
            },
        }
        mapping[parent]["children"].append(node_id)

    node("code", answer, "assistant", {"content_type": "code", "text": "2.45*2"}, "python")
    node("out", "code", "tool", {"content_type": "execution_output", "text": "4.9"})
    node("after", "out", "assistant", {"content_type": "text", "parts": ["It is 4.9."]})
    conv["current_node"] = "after"
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([conv]))
    assert mapping[user]["message"]["author"]["role"] == "user"
    return path


def test_chatgpt_tool_call_fragments_are_one_turn_without_citation_markers(tmp_path):
    _, convs = _read(_chatgpt_tool_call_export(tmp_path))
    ((_, _, messages),) = convs
    assert [role for role, _ in messages] == ["user", "assistant"]
    assert messages[1][1] == "Let me compute that. \n\nIt is 4.9."
    assert not any("\ue200" <= ch <= "\ue2ff" for _, text in messages for ch in text)


def test_store_keeps_the_folded_turn(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["import", str(_chatgpt_tool_call_export(tmp_path))]).exit_code == 0
    with Store.open() as store:
        rows = store._rows("SELECT role FROM messages ORDER BY id")
    assert [r[0] for r in rows] == ["user", "assistant"]
