"""Questions a user might ask about what they told the assistant, written by the backbone itself.

A refit that only continues the history teaches the memory to say what the user says; a user
sees the memory when the assistant answers "Where did I grow up?" in a new chat. So the refit
also trains on question -> answer examples made from the user's own messages: the frozen
backbone reads one message and writes a couple of short questions that message answers (the
self-study of context distillation: the model quizzes itself on the material), and the answer
is the message told back to the user (``perspective.told_back``), so it holds the user's facts
and nothing a model made up.

Measured on a six-fact persona with Qwen2.5-0.5B: generic recall prompts ("What do you remember
about me?") left the memory at 0 of 6 answered by generation; questions written per message
are what moved it (README, "Does the assistant *say* what it remembers?").

Generation is greedy and batched (a decode step of eight prompts costs about what one costs on a
CPU); between batches the refit yields to chat turns and checks for cancellation.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lpm_local.chat.encoding import ChatFormat, Turn
from lpm_local.chat.engine import ChatEngine
from lpm_local.memory.perspective import in_users_voice, told_back

# The instruction the backbone answers for each message (the message goes in as data: the chat
# encoder never lets its text become a control token).
QUESTION_PROMPT = (
    'A user told their assistant: "{message}"\n'
    "Write two short questions the user could ask the assistant later to check that it "
    "remembers this. One question per line, nothing else."
)
# Longer messages are cut, for the question prompt and for the answer told back: a pasted
# document would otherwise become one training window of thousands of tokens.
MAX_MESSAGE_CHARS = 600
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|Q\d*[:.)])\s*")


@dataclass(frozen=True)
class Probe:
    """One recall example: a question in the user's voice and the reply the memory should give."""

    question: str
    answer: str
    message: str  # the user message both come from


@dataclass(frozen=True)
class ProbeSettings:
    questions_per_message: int = 2
    max_new_tokens: int = 48
    batch_size: int = 8


def excerpt(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The message, or its first ``limit`` characters ended at a sentence (else a word)."""
    text = message.strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "), head.rfind("\n"))
    if end >= limit // 2:
        return head[: end + 1].rstrip()
    return head.rsplit(" ", 1)[0] if " " in head else head


def write_probes(
    backbone,
    chat: ChatFormat,
    messages: Sequence[str],
    settings: ProbeSettings | None = None,
    *,
    cancel: threading.Event | None = None,
    between_batches: Callable[[], None] | None = None,
) -> list[Probe]:
    """Probes for each of ``messages`` (user messages), in order. Stops early (returning what it
    has) when ``cancel`` is set."""
    settings = settings or ProbeSettings()
    probes: list[Probe] = []
    for start in range(0, len(messages), settings.batch_size):
        if cancel is not None and cancel.is_set():
            break
        batch = list(messages[start : start + settings.batch_size])
        replies = _generate(backbone, chat, batch, settings.max_new_tokens)
        for message, reply in zip(batch, replies, strict=True):
            answer = told_back(excerpt(message))
            for question in parse_questions(reply, settings.questions_per_message):
                probes.append(Probe(question, answer, message))
        if between_batches is not None:
            between_batches()
    return probes


def parse_questions(reply: str, limit: int) -> list[str]:
    """The questions of a generated reply, one per line, in the user's voice, deduplicated."""
    out: list[str] = []
    for line in reply.splitlines():
        text = _BULLET.sub("", line).strip().strip('"').strip()
        words = len(text.split())
        if not text.endswith("?") or not 2 <= words <= 20:
            continue
        question = in_users_voice(text)
        if question.lower() not in (q.lower() for q in out):
            out.append(question)
        if len(out) >= limit:
            break
    return out


def _generate(backbone, chat: ChatFormat, messages: list[str], max_new_tokens: int) -> list[str]:
    """Greedy replies to the question prompt for each message, left-padded into one batch."""
    prompts = [
        chat.prompt_ids([Turn("user", QUESTION_PROMPT.format(message=excerpt(m)))])
        for m in messages
    ]
    tokenizer = backbone.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :] = torch.tensor(prompt)
        mask[row, length - len(prompt) :] = 1
    device = backbone.device
    with torch.no_grad():
        out = backbone.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=ChatEngine(backbone).eos_token_ids,
        )
    return [
        tokenizer.decode(row[length:], skip_special_tokens=True) for row in out.to("cpu").tolist()
    ]
