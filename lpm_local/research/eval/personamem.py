"""A procedural PersonaMem-style benchmark: held-out users whose tastes change over sessions.

Each user is built on ``lpm_local.research.synthetic`` (MSC persona facts, a preference that changes
in a later session, recall questions with other users' facts as distractors) and gets two catalog
topics (``catalog.py``): topic A is stated in the first core session and changed, with a
reason, in the third; topic B is stated in the second. Every taste also comes with something the
user already did. Filler sessions (``filler.py``) are spread evenly before, between and after
the three core sessions until the history reaches the target length, from ~1K tokens to beyond
the backbone's window.

Questions of the seven PersonaMem types (four options each, scored by log-likelihood) are asked
at two points in time: *mid* (just before the third core session: topic A has not changed yet,
so its future taste is a wrong option) and *end* (after the whole history). A question only
ever sees ``turns[:cutoff]``. Everything is seeded: (personas, config) gives the same cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lpm_local.chat.encoding import Turn
from lpm_local.research.eval.cases import (
    Benchmark,
    EvalCase,
    EvalQuestion,
    TokenCounter,
    approx_tokens,
    history_token_count,
)
from lpm_local.research.eval.catalog import TOPICS, Taste, Topic
from lpm_local.research.eval.filler import filler_sessions
from lpm_local.research.synthetic import ACKS, RECALL_TEMPLATES, SyntheticConfig, SyntheticUsers

QTYPES = (
    "recall_facts",
    "suggest_new_ideas",
    "acknowledge_latest_preference",
    "track_preference_evolution",
    "revisit_reasons",
    "preference_aligned_recommendation",
    "generalise_new_scenarios",
)
# lpm_local.research.synthetic's question types under their PersonaMem names.
SYNTHETIC_TYPES = {
    "recall_fact": "recall_facts",
    "latest_preference": "acknowledge_latest_preference",
    "preference_evolution": "track_preference_evolution",
}
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


@dataclass(frozen=True)
class _Plan:
    """The seeded choices that make one user (independent of the history length)."""

    a: Topic
    a_old: Taste
    a_new: Taste
    a_rest: tuple[Taste, Taste]
    b: Topic
    b_val: Taste
    b_rest: tuple[Taste, Taste, Taste]
    reasons: dict  # "a_old" / "a_new" / "b" -> the reason the user stated


def build_user(
    synthetic: SyntheticUsers,
    index: int,
    length: int,
    config: PersonaMemConfig,
    count_tokens: TokenCounter = approx_tokens,
) -> EvalCase:
    rng = random.Random(f"personamem:{config.split}:{config.seed}:{index}")
    user = synthetic.user(index)
    plan = _plan(rng)
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
    questions = _end_questions(qrng, synthetic, index, user, plan, end, config)
    if config.mid_questions:
        questions = _mid_questions(qrng, synthetic, index, user, plan, mid, turns) + questions
    case_id = f"{user.persona.user_id}@{length}"
    questions = [_renamed(q, f"{case_id}/{k}") for k, q in enumerate(questions)]
    meta = {
        "target_tokens": length,
        "history_tokens": history_token_count(turns, count_tokens),
        "mid_cutoff": mid,
        "topics": [plan.a.name, plan.b.name],
        "facts": list(user.persona.facts),
    }
    return EvalCase("personamem", case_id, tuple(turns), tuple(questions), str(length), meta)


def _plan(rng: random.Random) -> _Plan:
    a, b = rng.sample(TOPICS, 2)
    a_tastes, b_tastes = rng.sample(a.tastes, 4), rng.sample(b.tastes, 4)
    reasons = {
        "a_old": rng.choice(a_tastes[0].reasons),
        "a_new": rng.choice(a_tastes[1].reasons),
        "b": rng.choice(b_tastes[0].reasons),
    }
    return _Plan(
        a,
        a_tastes[0],
        a_tastes[1],
        (a_tastes[2], a_tastes[3]),
        b,
        b_tastes[0],
        tuple(b_tastes[1:]),
        reasons,
    )


def _core_sessions(rng: random.Random, user, plan: _Plan) -> list[list[Turn]]:
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


def _q(
    rng: random.Random,
    qtype: str,
    prompt: str,
    prefix: str,
    correct: str,
    wrong: list[str],
    cutoff: int,
) -> EvalQuestion:
    options = [correct] + wrong
    rng.shuffle(options)
    return EvalQuestion("", qtype, prompt, prefix, tuple(options), options.index(correct), cutoff)


def _renamed(q: EvalQuestion, qid: str) -> EvalQuestion:
    return EvalQuestion(
        qid,
        q.qtype,
        q.prompt,
        q.answer_prefix,
        q.options,
        q.correct,
        q.cutoff,
        q.answer,
        q.category,
    )


def _latest(rng, topic: Topic, now: Taste, others: list[Taste], cutoff: int) -> EvalQuestion:
    return _q(
        rng,
        "acknowledge_latest_preference",
        f"What kind of {topic.noun} am I into these days?",
        "These days you're into",
        now.value,
        [t.value for t in others],
        cutoff,
    )


def _recommend(rng, topic: Topic, now: Taste, others: list[Taste], cutoff: int) -> EvalQuestion:
    return _q(
        rng,
        "preference_aligned_recommendation",
        topic.rec_prompt,
        "I'd recommend",
        now.recommendation,
        [t.recommendation for t in others],
        cutoff,
    )


def _recall(
    rng, synthetic: SyntheticUsers, index: int, user, fact: str, cutoff: int
) -> EvalQuestion:
    own = set(user.persona.facts) | {v for p in user.persona.preferences for v in p.values}
    wrong: list[str] = []
    while len(wrong) < 3:  # other users' sentences, as lpm_local.research.synthetic draws them
        j = rng.randrange(len(synthetic.pool))
        s = rng.choice(synthetic.pool[j])
        if j != index % len(synthetic.pool) and s not in own and s not in wrong:
            wrong.append(s)
    prompt, prefix = RECALL_TEMPLATES[0]
    return _q(rng, "recall_facts", prompt, prefix, fact, wrong, cutoff)


def _mid_questions(
    rng, synthetic, index, user, plan: _Plan, cutoff: int, turns: list[Turn]
) -> list[EvalQuestion]:
    """Before topic A changes: its *old* taste is right and the future one is a distractor."""
    others = [plan.a_new, *plan.a_rest]
    visible = " ".join(t.content for t in turns[:cutoff])
    facts = [f for f in user.persona.facts if f[1:-1] in visible]  # stated before the cutoff
    out = [
        _latest(rng, plan.a, plan.a_old, others, cutoff),
        _recommend(rng, plan.a, plan.a_old, others, cutoff),
    ]
    if facts:
        out.append(_recall(rng, synthetic, index, user, rng.choice(facts), cutoff))
    return out


def _end_questions(
    rng, synthetic, index, user, plan: _Plan, cutoff: int, config: PersonaMemConfig
) -> list[EvalQuestion]:
    a, b = plan.a, plan.b
    a_others, b_others = [plan.a_old, *plan.a_rest], list(plan.b_rest)
    recalls = [q for q in user.questions if q.qtype == "recall_fact"]
    out = [
        _q(
            rng,
            "recall_facts",
            q.prompt,
            q.answer_prefix,
            q.options[q.correct],
            [o for i, o in enumerate(q.options) if i != q.correct],
            cutoff,
        )
        for q in rng.sample(recalls, min(config.recall_questions, len(recalls)))
    ]
    for q in user.questions:  # the MSC preference that changed (lpm_local.research.synthetic)
        if q.qtype in ("latest_preference", "preference_evolution"):
            out.append(
                EvalQuestion(
                    "",
                    SYNTHETIC_TYPES[q.qtype],
                    q.prompt,
                    q.answer_prefix,
                    q.options,
                    q.correct,
                    cutoff,
                )
            )
    out += [
        _latest(rng, a, plan.a_new, a_others, cutoff),
        _q(
            rng,
            "track_preference_evolution",
            f"How has my taste in {a.noun} changed?",
            "It went from",
            f"{plan.a_old.value} to {plan.a_new.value}",
            [
                f"{plan.a_new.value} to {plan.a_old.value}",
                f"{plan.a_old.value} to {plan.a_rest[0].value}",
                f"{plan.a_rest[1].value} to {plan.a_new.value}",
            ],
            cutoff,
        ),
        # New ideas: the current taste's untried idea; what they already did is a wrong option.
        _q(
            rng,
            "suggest_new_ideas",
            f"I'd like to try something new involving {a.noun}. Any ideas?",
            "You could try",
            plan.a_new.new_idea,
            [plan.a_new.done, plan.a_old.new_idea, plan.a_rest[0].new_idea],
            cutoff,
        ),
        _q(
            rng,
            "suggest_new_ideas",
            f"I'd like to try something new involving {b.noun}. Any ideas?",
            "You could try",
            plan.b_val.new_idea,
            [plan.b_val.done, b_others[0].new_idea, b_others[1].new_idea],
            cutoff,
        ),
        # Reasons: the stated one; the same taste's unstated reason is the hardest distractor.
        _q(
            rng,
            "revisit_reasons",
            f"Remind me, why did I switch to {plan.a_new.value}?",
            "You said it was because",
            plan.reasons["a_new"],
            [
                _other(plan.a_new.reasons, plan.reasons["a_new"]),
                plan.reasons["a_old"],
                plan.a_rest[0].reasons[0],
            ],
            cutoff,
        ),
        _q(
            rng,
            "revisit_reasons",
            f"Remind me, why did I get into {plan.b_val.value}?",
            "You said it was because",
            plan.reasons["b"],
            [
                _other(plan.b_val.reasons, plan.reasons["b"]),
                b_others[0].reasons[0],
                b_others[1].reasons[1],
            ],
            cutoff,
        ),
        _recommend(rng, a, plan.a_new, a_others, cutoff),
        _recommend(rng, b, plan.b_val, b_others, cutoff),
        _q(
            rng,
            "generalise_new_scenarios",
            a.scenario_prompt,
            "How about",
            plan.a_new.scenario,
            [t.scenario for t in a_others],
            cutoff,
        ),
        _q(
            rng,
            "generalise_new_scenarios",
            b.scenario_prompt,
            "How about",
            plan.b_val.scenario,
            [t.scenario for t in b_others],
            cutoff,
        ),
    ]
    return out


def _other(pair: tuple[str, str], stated: str) -> str:
    return pair[1] if pair[0] == stated else pair[0]
