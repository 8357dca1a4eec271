"""What of a user message tells something about the user: its sentences that are not questions.

People give facts and ask in one breath: "I just adopted a cat called Pixel. What should I feed
her?" The bank files a message under its reading, and a question asked in the chat must not get a
group of its own: asked again, it would read its own group (its own words) instead of the fact's
(measured in ``routing.extend_bank``). Dropping every message that ends in "?" kept the questions
out but also lost the fact in front of one, and an imported chat log is mostly requests of that
shape. So a message is split into sentences and only its statements are filed and probed.

A sentence ends at ".", "!" or "?" (closing quotes and brackets after it allowed; not the dot of
a title such as "Dr." or "St.") or at a line break; it is a question when it ends in "?". A
question may tell something before it asks, in one sentence: "I'm vegan, what should I cook?"
tells "I'm vegan,". That clause is kept (``told_clause``): the words before the first comma that
a question word follows, unless they open with a question word themselves ("How old is he, do
you think?" tells nothing).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# A statement shorter than this rarely holds a fact ("ok", "thanks!", "Hi!").
MIN_STATEMENT_CHARS = 12
_QUOTES = "\"')]}\u201d\u2019\u00bb"  # may close a sentence after its stop
_CLOSERS = " \t" + _QUOTES
_BOUNDARY = re.compile(rf"[.!?][{re.escape(_QUOTES)}]*\s+|\n+")
# Words whose dot does not end a sentence ("Should I ask Dr. Patel?" would otherwise file its
# first half, "Should I ask Dr.", as a statement).
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "e.g", "i.e", "vs"})
# Words that open a question, after the comma of a told clause or at its front.
_ASKING = frozenset(
    "what how which where when who whom whose why can could should would will shall do does did "
    "is are am was were any anything have has".split()
)
_CLAUSE_END = re.compile(r",(?=\s+([^\W\d_]+))")  # a comma, white space, then a word
_FIRST_WORD = re.compile(r"[^\W\d_]+")
# A longer question sentence is not searched for a told clause: the token split decodes each
# of its commas' prefixes, and a sentence that long is a pasted text, not a remark.
MAX_CLAUSE_SENTENCE = 1000
# How much before a stop decides whether it ends a sentence: more than the longest title, so a
# window that cuts a word cuts one too long to be a title.
_TAIL_CHARS = 16
_TAIL_TOKENS = 8  # a token decodes to at least one character


def is_question(sentence: str) -> bool:
    return sentence.rstrip(_CLOSERS + "\n").endswith("?")


def ends_sentence(text: str) -> bool:
    """Whether ``text`` (a message up to some point) ends a sentence there."""
    if text.endswith("\n"):
        return True
    end = text.rstrip(_CLOSERS)
    if end.endswith(("!", "?")):
        return True
    words = end.split()
    return end.endswith(".") and bool(words) and words[-1][:-1].lower() not in _TITLES


def sentences(message: str) -> list[str]:
    """The message's sentences, stripped, in order (empty ones dropped)."""
    out, start = [], 0
    for boundary in _BOUNDARY.finditer(message):
        # The tail is enough (a title is a short word), and keeps a long message linear.
        tail = message[max(start, boundary.end() - _TAIL_CHARS) : boundary.end()]
        if ends_sentence(tail.rstrip(" \t")):
            out.append(message[start : boundary.end()].strip())
            start = boundary.end()
    out.append(message[start:].strip())
    return [s for s in out if s]


def told_clause(sentence: str) -> str:
    """What a question sentence tells before it asks: "I'm vegan, what should I cook?" ->
    "I'm vegan,"; "" when it tells nothing (no such clause, a clause that asks itself, or not a
    question)."""
    sentence = sentence.strip()
    if len(sentence) > MAX_CLAUSE_SENTENCE or not is_question(sentence):
        return ""
    for comma in _CLAUSE_END.finditer(sentence):
        if comma.group(1).lower() in _ASKING:
            head = sentence[: comma.start() + 1]
            first = _FIRST_WORD.search(head)
            return "" if first is None or first.group(0).lower() in _ASKING else head
    return ""


def _told(sentence: str) -> str:
    return told_clause(sentence) if is_question(sentence) else sentence


def statement_text(message: str) -> str:
    """The message without what it asks: its statements and the clauses its questions tell
    before they ask, joined by single spaces (a message with no question is returned as it is,
    stripped)."""
    parts = sentences(message)
    if not any(is_question(s) for s in parts):
        return message.strip()
    return " ".join(told for told in map(_told, parts) if told)


def collapsed(text: str) -> str:
    """``text`` with its white space collapsed to single spaces: the form in which a message's
    statements read from tokens (``statement_positions``, decoded) and from text
    (``statement_text``) are the same string, so one can be looked up by the other."""
    return " ".join(text.split())


def tells_something(message: str) -> bool:
    """Whether the message's statements are long enough to hold a fact."""
    return len(statement_text(message)) >= MIN_STATEMENT_CHARS


def statement_positions(
    decode: Callable[[Sequence[int]], str], ids: Sequence[int], positions: Sequence[int]
) -> list[int]:
    """Of one message's token ``positions`` in ``ids``, those of its statements (in order): the
    same split as ``statement_text``, made on token boundaries so a model's reading of the kept
    tokens is a reading of the statements alone. ``decode`` is the tokenizer's."""
    spans: list[list[int]] = [[]]
    # A stop ends a sentence only when white space follows it ("2.5" is one word): a
    # tokenizer puts that space at the front of the next piece, so the split waits for it.
    stopped = False
    for p in positions:
        piece = decode([ids[p]])
        if stopped and piece[:1].isspace():
            spans.append([])
        spans[-1].append(p)
        if stopped and piece and not piece.strip(_QUOTES):  # '?"': still waiting for a space
            continue
        stopped = False
        if "\n" in piece:
            spans.append([])
        elif piece.rstrip(_CLOSERS).endswith((".", "!", "?")):  # only then decode the span
            tail = decode([ids[q] for q in spans[-1][-_TAIL_TOKENS:]])
            stopped = ends_sentence(tail.rstrip(" \t"))
    texts = [decode([ids[p] for p in span]) for span in spans]
    if not any(is_question(t) for t in texts):
        return list(positions)  # a message of statements is read whole, as it always was
    kept: list[int] = []
    for sentence, text in zip(spans, texts, strict=True):
        if text.strip() and not is_question(text):
            kept += sentence
        elif clause := told_clause(text):
            kept += _clause_positions(decode, ids, sentence, clause)
    return kept


def _clause_positions(
    decode: Callable[[Sequence[int]], str], ids: Sequence[int], sentence: list[int], clause: str
) -> list[int]:
    """The positions of ``sentence`` (a question) that decode to its told ``clause``: up to the
    comma piece where the decoded prefix is the clause (none if no piece boundary falls there)."""
    for k, p in enumerate(sentence):
        if decode([ids[p]]).endswith(","):
            head = decode([ids[q] for q in sentence[: k + 1]]).strip()
            if head == clause:
                return sentence[: k + 1]
            if len(head) >= len(clause):
                break
    return []


__all__ = [
    "MIN_STATEMENT_CHARS",
    "collapsed",
    "ends_sentence",
    "is_question",
    "sentences",
    "statement_positions",
    "statement_text",
    "tells_something",
    "told_clause",
]
