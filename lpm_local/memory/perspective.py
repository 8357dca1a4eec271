"""Who is speaking: turn what the user said about themselves into what the assistant says back.

The recall examples of a refit pair a question the user might ask ("Where did I grow up?") with
the reply the memory should give. The reply is the user's own message told back to them ("I grew
up in Tampere" -> "You grew up in Tampere"): it holds exactly the facts the user gave, and none
that a model made up. Questions written by the backbone about a message often come in the
assistant's voice ("Where did you grow up?"); they are turned into the user's voice, because
that is how the user will ask.

English only, word by word: the aim is the right pronouns for the common sentence shapes, not
a grammar. A sentence the rules miss still holds its facts, which is what the memory learns.
"""

from __future__ import annotations

import re

# A word (letters and apostrophes) or a run of anything else; joined back they give the text.
_TOKENS = re.compile(r"[A-Za-z\u2019']+|[^A-Za-z\u2019']+")

_FIRST_TO_SECOND = {
    "i": "you",
    "i'm": "you're",
    "im": "you're",
    "i've": "you've",
    "i'd": "you'd",
    "i'll": "you'll",
    "my": "your",
    "mine": "yours",
    "me": "you",
    "myself": "yourself",
}
# Verbs that follow "I" and change with the person ("I am" -> "you are").
_AFTER_I = {"am": "are", "was": "were"}

_SECOND_TO_FIRST = {
    "your": "my",
    "yours": "mine",
    "yourself": "myself",
    "you're": "I'm",
    "you've": "I've",
    "you'd": "I'd",
    "you'll": "I'll",
}
# "you" after one of these is the subject of the question ("where do you live?" -> "do I").
_AUXILIARIES = {
    "do",
    "did",
    "does",
    "can",
    "could",
    "have",
    "had",
    "has",
    "will",
    "would",
    "should",
    "shall",
    "may",
    "might",
    "must",
}
# "are you" / "were you" become "am I" / "was I".
_BE_BEFORE_YOU = {"are": "am", "were": "was"}
_FIRST_PERSON = {"i", "i'm", "i've", "i'd", "i'll", "my", "me", "mine", "myself"}


def told_back(message: str) -> str:
    """The user's message in the assistant's voice: "My cat is Pixel" -> "Your cat is Pixel"."""
    out: list[str] = []
    previous = ""  # the last word, lower-cased
    for token in _TOKENS.findall(message):
        word = _plain(token)
        if word in _AFTER_I and previous == "i":
            out.append(_like(token, _AFTER_I[word]))
        elif word in _FIRST_TO_SECOND:
            replacement = _FIRST_TO_SECOND[word]
            starts = _starts_sentence(out)
            out.append(replacement.capitalize() if starts else replacement)
        else:
            out.append(token)
        if word[:1].isalpha():
            previous = word
    return "".join(out)


def in_users_voice(question: str) -> str:
    """A question about the user as the user asks it: "Where did you grow up?" -> "Where did I
    grow up?". A question already in the user's voice ("What did I tell you?") is left as is."""
    tokens = _TOKENS.findall(question)
    if any(_plain(t) in _FIRST_PERSON for t in tokens):
        return question
    out: list[str] = []
    words: list[tuple[int, str]] = []  # (index in out, lower-cased word) of the words so far
    for token in tokens:
        word = _plain(token)
        if word in _SECOND_TO_FIRST:
            out.append(_like(token, _SECOND_TO_FIRST[word]))
        elif word == "you":
            index, previous = words[-1] if words else (-1, "")
            if previous in _BE_BEFORE_YOU:
                out[index] = _like(out[index], _BE_BEFORE_YOU[previous])
                out.append("I")
            elif previous in _AUXILIARIES or not previous:
                out.append("I")
            else:
                out.append("me")
        else:
            out.append(token)
        if word[:1].isalpha():
            words.append((len(out) - 1, word))
    return "".join(out)


def _plain(token: str) -> str:
    return token.lower().replace("\u2019", "'")


def _like(original: str, replacement: str) -> str:
    """``replacement`` capitalised as ``original`` was (the pronoun "I" is always capital)."""
    if replacement == "I" or replacement.startswith("I'"):
        return replacement
    return replacement.capitalize() if original[:1].isupper() else replacement


def _starts_sentence(out: list[str]) -> bool:
    text = "".join(out).rstrip()
    return not text or text[-1] in ".!?\n"
