"""A procedural PersonaMem-style benchmark: held-out users whose tastes change over sessions.

Each user is built on ``lpm_local.research.synthetic`` (MSC persona facts, a preference that changes
in a later session, recall questions with other users' facts as distractors) and gets two catalog
topics (``catalog.py``): topic A is stated in the first core session and changed, with a
reason, in the third; topic B is stated in the second. Every taste also comes with something the
user already did. Filler sessions (``filler.py``) are spread evenly before, between and after
the three core sessions until the history reaches the target length, from ~1K tokens to beyond
the backbone's window.

Questions of the seven PersonaMem types (four options each, scored by log-likelihood;
``personamem_questions.py``) are asked at two points in time: *mid* (just before the third core
session: topic A has not changed yet, so its future taste is a wrong option) and *end* (after
the whole history). A question only ever sees ``turns[:cutoff]``. Everything is seeded:
(personas, config) gives the same cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lpm_local.chat.encoding import Turn
from lpm_local.research.eval.cases import (
    Benchmark,
    EvalCase,
    TokenCounter,
    approx_tokens,
    history_token_count,
)
from lpm_local.research.eval.filler import filler_sessions
from lpm_local.research.eval.personamem_questions import (
    Plan,
    draw_plan,
    end_questions,
    mid_questions,
    renamed,
)
from lpm_local.research.synthetic import ACKS, SyntheticConfig, SyntheticUsers

QTYPES = (
    "recall_facts",
    "suggest_new_ideas",
    "acknowledge_latest_preference",
    "track_preference_evolution",
    "revisit_reasons",
    "preference_aligned_recommendation",
    "generalise_new_scenarios",
)
STATE = (
    "Lately I've been really into {v}, mostly because {r}.",
    "I've got really into {v} recently, because {r}.",
    "These days I spend a lot of my free time on {v}, since {r}.",
)
CHANGE = (
    "Actually, I've gone off {old}. These days I'm into {new}, because {r}.",
    "Funny thing: I'm not really into {old} any more. I've switched to {new}, since {r}.",
)
DONE = (
    "Last weekend I tried {d}, and it was great.",
    "I finally got round to {d} last month. Loved it.",
)
TOPIC_ACKS = ("That sounds wonderful!", "How fun!", "Nice, I'll keep that in mind.") + ACKS


@dataclass(frozen=True)
class PersonaMemConfig:
    # Users per history length (the same users at every length, so lengths compare cleanly).
    users: int = 10
    # Target history lengths in tokens: ~1K up to beyond the backbone's window.
    history_tokens: tuple[int, ...] = (1024,)
    # Users at each length (None: ``users`` everywhere); long histories cost most to score.
    users_per_length: tuple[int, ...] | None = None
    # Held-out personas: MSC ``test`` (projector training uses ``train``; lr tuning ``valid``).
    split: str = "test"
    seed: int = 0
    # Recall questions at the end (of the ~5 facts): more would swamp the other six types.
    recall_questions: int = 2
    # Ask the time-sensitive questions before topic A changes too.
    mid_questions: bool = True

    def __post_init__(self) -> None:
        if self.users < 1 or not self.history_tokens or min(self.history_tokens) < 64:
            raise ValueError(
                f"need users >= 1 and history lengths >= 64 tokens, got "
                f"users={self.users}, history_tokens={self.history_tokens}"
            )
        if self.users_per_length is not None and (
            len(self.users_per_length) != len(self.history_tokens) or min(self.users_per_length) < 1
        ):
            raise ValueError("users_per_length needs one positive count per history length")
        if self.recall_questions < 0:
            raise ValueError(f"recall_questions must be >= 0, got {self.recall_questions}")

    def plan(self) -> list[tuple[int, int]]:
        """(target tokens, users) per history length."""
        counts = self.users_per_length or (self.users,) * len(self.history_tokens)
        return list(zip(self.history_tokens, counts))


def build_personamem(
    personas: dict,
    config: PersonaMemConfig | None = None,
    count_tokens: TokenCounter = approx_tokens,
) -> Benchmark:
    """Cases for every (history length, user) of the plan; ``personas`` from
    ``lpm_local.research.synthetic.load_msc_personas``; ``count_tokens`` sizes the histories."""
    config = config or PersonaMemConfig()
    synthetic = SyntheticUsers(
        personas,
        config.split,
        seed=config.seed,
        config=SyntheticConfig(n_sessions=3, max_facts=5, preference_changes=1),
    )
    cases = [
        build_user(synthetic, index, length, config, count_tokens)
        for length, n in config.plan()
        for index in range(n)
    ]
    return Benchmark(
        "personamem",
        tuple(cases),
        QTYPES,
        generative=False,
        description="procedural PersonaMem-style users (MSC personas + catalog tastes)",
    )


def build_user(
    synthetic: SyntheticUsers,
    index: int,
    length: int,
    config: PersonaMemConfig,
    count_tokens: TokenCounter = approx_tokens,
) -> EvalCase:
    rng = random.Random(f"personamem:{config.split}:{config.seed}:{index}")
    user = synthetic.user(index)
    plan = draw_plan(rng)
    core = _core_sessions(rng, user, plan)
    core_tokens = sum(history_token_count(s, count_tokens) for s in core)
    filler_rng = random.Random(f"filler:{config.split}:{config.seed}:{index}:{length}")
    gap = max(0, length - core_tokens) // 4
    gaps = [_flat(filler_sessions(filler_rng, gap, count_tokens)) for _ in range(4)]
    turns: list[Turn] = gaps[0] + core[0] + gaps[1] + core[1] + gaps[2]
    mid = len(turns)
    turns += core[2] + gaps[3]
    end = len(turns)
    qrng = random.Random(f"questions:{config.split}:{config.seed}:{index}")
    questions = end_questions(qrng, synthetic, index, user, plan, end, config.recall_questions)
    if config.mid_questions:
        questions = mid_questions(qrng, synthetic, index, user, plan, mid, turns) + questions
    case_id = f"{user.persona.user_id}@{length}"
    questions = [renamed(q, f"{case_id}/{k}") for k, q in enumerate(questions)]
    meta = {
        "target_tokens": length,
        "history_tokens": history_token_count(turns, count_tokens),
        "mid_cutoff": mid,
        "topics": [plan.a.name, plan.b.name],
        "facts": list(user.persona.facts),
    }
    return EvalCase("personamem", case_id, tuple(turns), tuple(questions), str(length), meta)


def _core_sessions(rng: random.Random, user, plan: Plan) -> list[list[Turn]]:
    """The three sessions where the user says something about themselves, exchanges shuffled."""

    def say(text: str) -> list[tuple[Turn, Turn]]:
        return [(Turn("user", text), Turn("assistant", rng.choice(TOPIC_ACKS)))]

    extra = [
        say(rng.choice(STATE).format(v=plan.a_old.value, r=plan.reasons["a_old"]))
        + say(rng.choice(DONE).format(d=plan.a_old.done)),
        say(rng.choice(STATE).format(v=plan.b_val.value, r=plan.reasons["b"]))
        + say(rng.choice(DONE).format(d=plan.b_val.done)),
        say(
            rng.choice(CHANGE).format(
                old=plan.a_old.value, new=plan.a_new.value, r=plan.reasons["a_new"]
            )
        )
        + say(rng.choice(DONE).format(d=plan.a_new.done)),
    ]
    sessions = []
    for session, mine in zip(user.sessions, extra):
        turns = [Turn(t.role, t.content) for t in session.turns]
        pairs = [(turns[i], turns[i + 1]) for i in range(0, len(turns) - 1, 2)]
        rng.shuffle(pairs)
        # The catalog exchanges keep their order (a taste is stated before what was done with it).
        slots = sorted(rng.randint(0, len(pairs)) for _ in mine)
        for offset, (at, pair) in enumerate(zip(slots, mine)):
            pairs.insert(at + offset, pair)
        sessions.append([turn for pair in pairs for turn in pair])
    return sessions


def _flat(sessions: list[list[Turn]]) -> list[Turn]:
    return [turn for session in sessions for turn in session]
