"""The recall benchmark: short single-session synthetic users, "What do you remember about me?".

This is the task the shipped projector was trained for and the table in its card
(``lpm_local/backbones/<backbone>/PROJECTOR_CARD.md``). Each held-out user
(``lpm_local.research.synthetic``, MSC ``test`` personas, never seen in projector training)
states up to five facts in one session, one user turn per fact plus a short acknowledgement
(~130 tokens). Per fact there is one four-option question, the distractors being other users'
facts, asked after the session:

- ``recall_facts``: the phrasing the projector was trained on ("What do you remember about
  me?" -> "You told me: <option>");
- ``recall_heldout_phrasing``: the same facts asked in the two phrasings never used in training
  ("What is one thing I mentioned about myself?", "Remind me what I told you about myself."),
  with their own shuffled distractors; it shows that a projector did not just learn one phrasing.

The users and questions are exactly those ``SyntheticUsers`` gives for (split, index, seed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lpm_local.research.eval.cases import (
    Benchmark,
    EvalCase,
    EvalQuestion,
    TokenCounter,
    approx_tokens,
    history_token_count,
)
from lpm_local.research.synthetic import SyntheticConfig, SyntheticUsers

QTYPES = ("recall_facts", "recall_heldout_phrasing")
# Indices into ``synthetic.RECALL_TEMPLATES`` that projector training never uses.
HELDOUT_TEMPLATES = (2, 3)
LENGTH_LABEL = "5 facts"


@dataclass(frozen=True)
class RecallConfig:
    users: int = 8
    split: str = "test"
    seed: int = 0
    heldout_phrasing: bool = True
    synthetic: SyntheticConfig = SyntheticConfig()  # one session, up to five facts

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"the recall benchmark needs users >= 1, got {self.users}")


def build_recall(
    personas: dict, config: RecallConfig | None = None, count_tokens: TokenCounter = approx_tokens
) -> Benchmark:
    """One case per held-out user; ``personas`` from ``synthetic.load_msc_personas``."""
    config = config or RecallConfig()
    main = SyntheticUsers(personas, config.split, seed=config.seed, config=config.synthetic)
    alt = SyntheticUsers(
        personas,
        config.split,
        seed=config.seed,
        config=replace(config.synthetic, recall_templates=HELDOUT_TEMPLATES),
    )
    cases = []
    for index in range(config.users):
        user = main.user(index)
        turns = tuple(user.history())
        asked = [("recall_facts", q) for q in user.questions if q.qtype == "recall_fact"]
        if config.heldout_phrasing:
            other = alt.user(index)
            if tuple(other.history()) != turns:  # the phrasing only changes the questions
                raise ValueError(f"user {index}: held-out phrasings changed the history")
            asked += [
                ("recall_heldout_phrasing", q) for q in other.questions if q.qtype == "recall_fact"
            ]
        case_id = user.persona.user_id
        questions = tuple(
            EvalQuestion(
                f"{case_id}/{k}",
                qtype,
                q.prompt,
                q.answer_prefix,
                q.options,
                q.correct,
                len(turns),  # asked after the one session: the whole history is visible
            )
            for k, (qtype, q) in enumerate(asked)
        )
        meta = {"history_tokens": history_token_count(turns, count_tokens)}
        cases.append(EvalCase("recall", case_id, turns, questions, LENGTH_LABEL, meta))
    return Benchmark(
        "recall",
        tuple(cases),
        QTYPES if config.heldout_phrasing else QTYPES[:1],
        generative=False,
        description="single-session synthetic users, up to five facts, four-option recall",
    )
