"""The questions a PersonaMem-style user is asked, and the seeded tastes (``Plan``) they test.

``personamem.py`` builds the history that states a plan; this module asks about it. Each
question type has its own hard distractor: the future taste before a change (*mid*), what the
user already did (new ideas), the same taste's unstated reason (reasons), the other user's facts
(recall). Options are shuffled by the caller's seeded ``rng``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from lpm_local.chat.encoding import Turn
from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.catalog import TOPICS, Taste, Topic
from lpm_local.research.synthetic import RECALL_TEMPLATES, SyntheticUsers

# lpm_local.research.synthetic's question types under their PersonaMem names.
SYNTHETIC_TYPES = {
    "recall_fact": "recall_facts",
    "latest_preference": "acknowledge_latest_preference",
    "preference_evolution": "track_preference_evolution",
}


@dataclass(frozen=True)
class Plan:
    """The seeded choices that make one user (independent of the history length)."""

    a: Topic
    a_old: Taste
    a_new: Taste
    a_rest: tuple[Taste, Taste]
    b: Topic
    b_val: Taste
    b_rest: tuple[Taste, Taste, Taste]
    reasons: dict  # "a_old" / "a_new" / "b" -> the reason the user stated


def draw_plan(rng: random.Random) -> Plan:
    """Two topics and four tastes of each (the first the user's, the rest distractors)."""
    a, b = rng.sample(TOPICS, 2)
    a_tastes, b_tastes = rng.sample(a.tastes, 4), rng.sample(b.tastes, 4)
    reasons = {
        "a_old": rng.choice(a_tastes[0].reasons),
        "a_new": rng.choice(a_tastes[1].reasons),
        "b": rng.choice(b_tastes[0].reasons),
    }
    return Plan(
        a,
        a_tastes[0],
        a_tastes[1],
        (a_tastes[2], a_tastes[3]),
        b,
        b_tastes[0],
        tuple(b_tastes[1:]),
        reasons,
    )


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


def renamed(q: EvalQuestion, qid: str) -> EvalQuestion:
    """``q`` under its final id (ids are given once every question of the case is known)."""
    return replace(q, qid=qid)


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


def mid_questions(
    rng, synthetic, index, user, plan: Plan, cutoff: int, turns: list[Turn]
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


def end_questions(
    rng, synthetic, index, user, plan: Plan, cutoff: int, recall_questions: int
) -> list[EvalQuestion]:
    """After the whole history: recall, the MSC preference that changed, and every catalog
    question type on both topics (topic A's current taste is the new one)."""
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
        for q in rng.sample(recalls, min(recall_questions, len(recalls)))
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
