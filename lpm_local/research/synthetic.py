"""Synthetic users for training and evaluating memory, built from MSC persona sentences.

Structure (reused by the PersonaMem-style evaluation):
``Persona`` (facts + preferences with a change history) -> ``Session``s (timestamped chat turns
in which the user states facts, changes preferences and sometimes asks what the assistant
remembers) -> ``Question``s (four options, the correct index, a type, and the session after
which it is asked, so a question only ever sees the history before it).

Everything is seeded: the same (split, index, seed, config) gives the same user.
Distractor options are other users' sentences from the same split, never the user's own.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from lpm_local.chat.encoding import Turn

SPLITS = ("train", "valid", "test")
QUESTION_TYPES = ("recall_fact", "latest_preference", "preference_evolution")

# Phrasings of the recall question. Training may use the first ones; evaluation can hold some
# out (``recall_templates``) to show that a trained projector did not just learn one phrasing.
RECALL_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("What do you remember about me?", "You told me: "),
    ("Tell me something you know about me.", "You know that "),
    ("What is one thing I mentioned about myself?", "You mentioned: "),
    ("Remind me what I told you about myself.", "You said: "),
)
ACKS = (
    "Got it, thanks for telling me.",
    "Noted!",
    "Thanks for sharing that.",
    "I'll remember that.",
    "Good to know.",
    "That's nice to hear.",
)
OPENERS = ("", "", "By the way, ", "Oh, and ", "Fun fact: ", "Also, ")
_PREF = re.compile(r"^I (like|love|enjoy|prefer|adore) (.+?)\.?$", re.IGNORECASE)


@dataclass(frozen=True)
class Preference:
    """A preference and its history: ``values[0]`` held first, ``values[-1]`` now.

    ``changed_in[i]`` is the session in which ``values[i]`` was stated."""

    values: tuple[str, ...]
    changed_in: tuple[int, ...]

    @property
    def current(self) -> str:
        return self.values[-1]


@dataclass(frozen=True)
class Persona:
    user_id: str
    split: str
    facts: tuple[str, ...]
    preferences: tuple[Preference, ...] = ()


@dataclass(frozen=True)
class SyntheticTurn(Turn):
    """A chat turn of a synthetic session, plus when it was said and why it is there. It is a
    ``Turn``, so anything that encodes chats takes it as it is; ``history`` hands out plain
    ``Turn``s, because what was said is all a method may learn from."""

    timestamp: str  # ISO 8601
    kind: str = "chat"  # "fact" | "ack" | "preference" | "recall_q" | "recall_a" | "chat"


@dataclass(frozen=True)
class Session:
    index: int
    started_at: str
    turns: tuple[SyntheticTurn, ...]


@dataclass(frozen=True)
class Question:
    qtype: str
    prompt: str  # the user's question
    answer_prefix: str  # the start of the assistant's reply, then an option
    options: tuple[str, str, str, str]
    correct: int
    asked_after_session: int  # only sessions 0..asked_after_session are history for it
    asked_at: str
    template: int = 0


@dataclass(frozen=True)
class SyntheticUser:
    persona: Persona
    sessions: tuple[Session, ...]
    questions: tuple[Question, ...]

    def history(self, upto_session: int | None = None) -> list[Turn]:
        """The turns of sessions 0..upto_session (all when None), in order, without their
        timestamps and kinds."""
        last = len(self.sessions) - 1 if upto_session is None else upto_session
        return [Turn(t.role, t.content) for s in self.sessions[: last + 1] for t in s.turns]


@dataclass(frozen=True)
class SyntheticConfig:
    # One session with ~5 facts is the measured recall protocol; more sessions add preference
    # changes.
    n_sessions: int = 1
    # MSC personas hold 4-6 sentences (valid/test); cap so histories stay ~120 tokens.
    max_facts: int = 5
    # Preferences that change once in a later session (needs n_sessions >= 2).
    preference_changes: int = 0
    # Probability that a later session opens with a recall exchange ("What do you remember..."):
    # 0 by default so the history holds only what the user said (the strict protocol).
    recall_turn_prob: float = 0.0
    # Which recall phrasings questions may use (indices into RECALL_TEMPLATES).
    recall_templates: tuple[int, ...] = (0,)
    # A random opener ("By the way, ...") before some facts: history is not a bare list.
    use_openers: bool = True
    start_date: str = "2025-01-06T09:00:00"
    days_between_sessions: int = 7

    def __post_init__(self) -> None:
        if self.n_sessions < 1 or self.max_facts < 1:
            raise ValueError(
                f"n_sessions and max_facts must be >= 1, got {self.n_sessions}, {self.max_facts}"
            )
        if self.preference_changes < 0 or (self.preference_changes and self.n_sessions < 2):
            raise ValueError("preference_changes needs n_sessions >= 2 and must be >= 0")
        if not 0.0 <= self.recall_turn_prob <= 1.0:
            raise ValueError(f"recall_turn_prob must be in [0, 1], got {self.recall_turn_prob}")
        if not self.recall_templates or any(
            not 0 <= i < len(RECALL_TEMPLATES) for i in self.recall_templates
        ):
            raise ValueError(
                f"recall_templates must index RECALL_TEMPLATES, got {self.recall_templates}"
            )
        datetime.fromisoformat(self.start_date)


def load_msc_personas(path: str | Path) -> dict[str, list[list[str]]]:
    """Persona sentence lists per split (each MSC dialogue gives two personas; empties dropped)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    out: dict[str, list[list[str]]] = {}
    for split in SPLITS:
        personas = []
        for entry in raw.get(split, []):
            for speaker in ("Speaker 1", "Speaker 2"):
                sentences = [_clean(s) for s in entry.get(speaker, []) if isinstance(s, str)]
                sentences = list(dict.fromkeys(s for s in sentences if s))  # dedupe, keep order
                if len(sentences) >= 2:
                    personas.append(sentences)
        out[split] = personas
    return out


def _clean(sentence: str) -> str:
    s = " ".join(sentence.split())
    if s and s[-1] not in ".!?":
        s += "."
    return s[:1].upper() + s[1:]


class SyntheticUsers:
    """Seeded generator of ``SyntheticUser``s from one split of the persona pool."""

    def __init__(
        self,
        personas: dict[str, list[list[str]]],
        split: str,
        *,
        seed: int = 0,
        config: SyntheticConfig | None = None,
    ):
        if split not in personas or not personas[split]:
            raise ValueError(f"no personas for split {split!r}")
        self.pool = personas[split]
        self.split, self.seed = split, seed
        self.config = config or SyntheticConfig()
        self._pref_pool = [s for p in self.pool for s in p if _PREF.match(s)]

    def __len__(self) -> int:
        return len(self.pool)

    def user(self, index: int) -> SyntheticUser:
        rng = random.Random(f"{self.split}:{self.seed}:{index}")
        sentences = list(self.pool[index % len(self.pool)])
        facts = sentences[: self.config.max_facts]
        prefs = self._preferences(rng, facts)
        persona = Persona(f"{self.split}-{index}", self.split, tuple(facts), tuple(prefs))
        sessions = self._sessions(rng, persona)
        questions = self._questions(rng, index, persona, sessions)
        return SyntheticUser(persona, tuple(sessions), tuple(questions))

    def users(self, n: int, start: int = 0) -> list[SyntheticUser]:
        return [self.user(i) for i in range(start, start + n)]

    # -- building blocks ---------------------------------------------------------------------

    def _preferences(self, rng: random.Random, facts: list[str]) -> list[Preference]:
        prefs = []
        own = set(facts)
        for _ in range(self.config.preference_changes):
            old, new = rng.sample(self._pref_pool, 2)
            if old in own or new in own:
                continue
            changed = rng.randrange(1, self.config.n_sessions)
            prefs.append(Preference((old, new), (0, changed)))
        return prefs

    def _sessions(self, rng: random.Random, persona: Persona) -> list[Session]:
        cfg = self.config
        per_session: list[list[tuple[str, str, str]]] = [[] for _ in range(cfg.n_sessions)]
        start = datetime.fromisoformat(cfg.start_date)
        for i, fact in enumerate(persona.facts):  # spread facts over sessions, in order
            s = i * cfg.n_sessions // len(persona.facts)
            opener = rng.choice(OPENERS) if cfg.use_openers else ""
            lower = opener and not re.match(r"I\b", fact)  # "I" and "I'm" stay capitalised
            text = opener + (fact[:1].lower() + fact[1:] if lower else fact)
            per_session[s] += [("user", text, "fact"), ("assistant", rng.choice(ACKS), "ack")]
        for pref in persona.preferences:
            for value, s in zip(pref.values, pref.changed_in):
                text = value if s == 0 else f"Actually, my taste has changed. {value}"
                per_session[s] += [
                    ("user", text, "preference"),
                    ("assistant", rng.choice(ACKS), "ack"),
                ]
        sessions = []
        for s, raw in enumerate(per_session):
            if s > 0 and rng.random() < cfg.recall_turn_prob:
                prompt, prefix = RECALL_TEMPLATES[0]
                fact = rng.choice(
                    [f for f in persona.facts[: max(1, len(persona.facts) * s // cfg.n_sessions)]]
                )
                raw = [("user", prompt, "recall_q"), ("assistant", prefix + fact, "recall_a")] + raw
            t0 = start + timedelta(days=cfg.days_between_sessions * s)
            turns = tuple(
                SyntheticTurn(role, text, (t0 + timedelta(minutes=2 * j)).isoformat(), kind)
                for j, (role, text, kind) in enumerate(raw)
            )
            sessions.append(Session(s, t0.isoformat(), turns))
        return sessions

    def _distractors(self, rng: random.Random, index: int, exclude: set[str], k: int) -> list[str]:
        out: list[str] = []
        while len(out) < k:
            j = rng.randrange(len(self.pool))
            if j == index % len(self.pool):
                continue
            s = rng.choice(self.pool[j])
            if s not in exclude and s not in out:
                out.append(s)
        return out

    def _question(
        self, rng, qtype, prompt, prefix, correct, distractors, after, sessions, template=0
    ):
        options = [correct] + distractors
        rng.shuffle(options)
        asked = datetime.fromisoformat(sessions[after].turns[-1].timestamp) + timedelta(hours=1)
        return Question(
            qtype,
            prompt,
            prefix,
            tuple(options),
            options.index(correct),
            after,
            asked.isoformat(),
            template,
        )

    def _questions(self, rng, index, persona: Persona, sessions) -> list[Question]:
        cfg, last = self.config, len(sessions) - 1
        exclude = set(persona.facts) | {v for p in persona.preferences for v in p.values}
        out = []
        for fact in persona.facts:
            t = rng.choice(cfg.recall_templates)
            prompt, prefix = RECALL_TEMPLATES[t]
            out.append(
                self._question(
                    rng,
                    "recall_fact",
                    prompt,
                    prefix,
                    fact,
                    self._distractors(rng, index, exclude, 3),
                    last,
                    sessions,
                    t,
                )
            )
        for pref in persona.preferences:
            old, new = pref.values[0], pref.values[-1]
            out.append(
                self._question(
                    rng,
                    "latest_preference",
                    "What do I like these days?",
                    "These days: ",
                    new,
                    [old] + self._distractors(rng, index, exclude, 2),
                    last,
                    sessions,
                )
            )
            wrong = self._distractors(rng, index, exclude, 2)
            out.append(
                self._question(
                    rng,
                    "preference_evolution",
                    "How have my tastes changed?",
                    "",
                    f"Before: {old} Now: {new}",
                    [f"Before: {new} Now: {old}"] + [f"Before: {old} Now: {w}" for w in wrong],
                    last,
                    sessions,
                )
            )
        return out
