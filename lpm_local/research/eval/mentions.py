"""Generative scoring of a multiple-choice question: does the free-form reply name the right option?

The question is asked without its options (the model sees the question and the answer prefix,
e.g. "These days you're into", and continues greedily); the reply is then checked against the
options it never saw. A reply is **right** when it mentions the correct option and none of the
wrong ones; mentioning two options, or none, is wrong.

What "mentions an option" means (``mentioned``), so that the rule holds for one-word values
("jazz") and for whole sentences ("I have two cats.", reasons, recommendations) alike:

1. **Normalise** reply and options the same way: Unicode NFKC, case-folded, every character that
   is not a letter or a digit becomes a space, then split into words; each word is reduced to
   its Porter stem (NLTK's, as LoCoMo's F1 uses), so "cats" matches "cat" and "hiking" "hike".
2. **Content words** of an option: its stems minus a short list of function words (articles,
   pronouns, auxiliaries, prepositions, "like", "really" ...) and of the frames persona facts
   are stated in ("I work as", "I live in", "my favourite ... is"), which a reply paraphrases.
3. **The option's key** is its *distinctive* content words: those that no other option of the
   same question contains. "Kind of Blue by Miles Davis" against "Blue Train by John
   Coltrane" keys on {kind, mile, davi}; "I have two cats." against other users' facts on
   {two, cat}.
   A key of up to three words must appear whole; a longer key (a sentence) is mentioned when at
   least half of its words (rounded up) appear, so a paraphrase that keeps most of the
   distinctive words still counts.
4. **No distinctive word** (options that only differ in order, "jazz to opera" against
   "opera to jazz"): the option's content words must appear in the reply in the same order (as a
   subsequence of the reply's words), so the direction of a change is what is checked.
5. **Nested options**: when the reply mentions two options and the content words of one are a
   strict subset of the other's ("jazz" and "smooth jazz"), only the longer one counts.

An option made only of function words ("I love my job.") keeps all its words as content words.
Options that say the same thing in other words (MSC has "I love music." next to "I like most
music.") cannot be told apart by any word rule: a reply naming one names both, and counts as
wrong; of 1,000 recall questions on the MSC ``test`` split (100 users), 4 hold such a pair.

The rule only looks at words, never at the model's log-probabilities, so it scores every
method's reply the same way; unit tests pin it on hand-written replies.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

# Function words and persona-statement frames: an option is never recognised by these.
STOPWORDS = frozenset(
    """
    a an the and or but of to in on at by for from with about as into onto over than then
    i me my mine myself you your yours we our us he she it its they them their this that these
    those is am are was were be been being have has had do does did will would can could shall
    should may might must just really very so too also quite some any all more most much
    like love enjoy prefer lately these days now before go went going get got s t m re ve ll d
    what which who whom whose when where why how there here not no yes
    work job live name favorite favourite thing things used currently
    """.split()
)
# Keys longer than this are sentences: half their words (rounded up) are enough.
WHOLE_KEY_MAX = 3

_NON_WORD = re.compile(r"[^\w]+|_+")


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer().stem(word)


def words(text: str) -> list[str]:
    """Normalised, stemmed words of a text (rule 1)."""
    folded = unicodedata.normalize("NFKC", str(text)).casefold()
    return [_stem(w) for w in _NON_WORD.sub(" ", folded).split()]


def content_words(text: str) -> list[str]:
    """The text's stems minus function words, in order (rule 2)."""
    stop = _stemmed_stopwords()
    return [w for w in words(text) if w not in stop]


@lru_cache(maxsize=1)
def _stemmed_stopwords() -> frozenset[str]:
    return frozenset(_stem(w) for w in STOPWORDS)


@dataclass(frozen=True)
class OptionKey:
    """What identifies one option in a reply."""

    distinctive: tuple[str, ...]  # content stems no other option has (rule 3)
    ordered: tuple[str, ...]  # all content stems in order (rule 4, when distinctive is empty)

    @property
    def needed(self) -> int:
        """How many distinctive words must appear."""
        n = len(self.distinctive)
        return n if n <= WHOLE_KEY_MAX else math.ceil(n / 2)


def option_keys(options: Sequence[str]) -> list[OptionKey]:
    """One key per option, each relative to the question's other options."""
    # An option made only of function words ("I love my job.") keeps all its words.
    contents = [content_words(o) or words(o) for o in options]
    keys = []
    for i, own in enumerate(contents):
        others = {w for j, c in enumerate(contents) if j != i for w in c}
        distinctive = tuple(dict.fromkeys(w for w in own if w not in others))
        keys.append(OptionKey(distinctive, tuple(own)))
    return keys


def _is_subsequence(needle: Sequence[str], haystack: Sequence[str]) -> bool:
    it = iter(haystack)
    return all(any(w == h for h in it) for w in needle)


def key_in(key: OptionKey, reply_words: Sequence[str]) -> bool:
    """Whether a reply (its ``words``) mentions the option with this key."""
    if key.distinctive:
        present = set(reply_words)
        return sum(w in present for w in key.distinctive) >= key.needed
    return bool(key.ordered) and _is_subsequence(key.ordered, reply_words)


def mentioned(reply: str, options: Sequence[str]) -> list[int]:
    """Indices of the options the reply mentions (rule 5 applied)."""
    reply_words = words(reply)
    keys = option_keys(options)
    hits = [i for i, key in enumerate(keys) if key_in(key, reply_words)]
    sets = {i: set(keys[i].ordered) for i in hits}
    # "smooth jazz" in the reply also contains "jazz": the longer option is what it names.
    return [i for i in hits if not any(sets[i] < sets[j] for j in hits if j != i)]


def generative_hit(reply: str, options: Sequence[str], correct: int) -> bool:
    """The reply mentions the correct option and no other."""
    return mentioned(reply, options) == [correct]
