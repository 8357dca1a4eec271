"""What every benchmark produces and every method consumes: cases, questions, benchmarks.

An ``EvalCase`` is one user (or one LoCoMo conversation): a chat history as ``Turn``s (the chat's
own turn type; user and assistant turns only) and the questions asked about it. Each question
carries a ``cutoff``: the number of history turns that exist when it is asked. The runner fits
and conditions every method on ``turns[:cutoff]`` only, so no question can see what the user
said after it (time leakage is ruled out by construction, and tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lpm_local.chat.encoding import Turn

TokenCounter = Callable[[str], int]

# Question types as a table column header fits them.
SHORT = {
    "recall_facts": "recall",
    "recall_heldout_phrasing": "held-out phr.",
    "suggest_new_ideas": "new ideas",
    "acknowledge_latest_preference": "latest pref.",
    "track_preference_evolution": "evolution",
    "revisit_reasons": "reasons",
    "preference_aligned_recommendation": "recommend",
    "generalise_new_scenarios": "generalise",
    "multi_hop": "multi-hop",
    "temporal": "temporal",
    "open_domain": "open-domain",
    "single_hop": "single-hop",
}


def token_counter(backbone) -> Callable[[str], int]:
    """Tokens of a text in the backbone's tokenizer, as histories are sized."""
    tokenizer = backbone.tokenizer
    return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)


def approx_tokens(text: str) -> int:
    """A tokenizer-free length estimate (~4 characters per token for English BPE vocabularies)."""
    return max(1, (len(text) + 3) // 4)


@dataclass(frozen=True)
class EvalQuestion:
    """A question with four (or more) options, scored by option log-likelihood."""

    qid: str
    qtype: str
    prompt: str  # the user's message
    answer_prefix: str  # the start of the assistant's reply; each option follows it
    options: tuple[str, ...]
    correct: int
    cutoff: int  # history turns visible to this question: turns[:cutoff]
    answer: str = ""  # reference answer for generation (token F1); defaults to the correct option
    category: str = ""  # a finer label (LoCoMo category), reported when set

    def __post_init__(self) -> None:
        if len(self.options) < 2 or not 0 <= self.correct < len(self.options):
            raise ValueError(
                f"{self.qid}: need >= 2 options and a valid correct index, got "
                f"{len(self.options)} options, correct={self.correct}"
            )
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"{self.qid}: options must be distinct, got {self.options}")
        if self.cutoff < 0:
            raise ValueError(f"{self.qid}: cutoff must be >= 0, got {self.cutoff}")

    @property
    def reference(self) -> str:
        return self.answer or self.options[self.correct]


@dataclass(frozen=True)
class EvalCase:
    """One user's (or conversation's) history and the questions asked along it."""

    benchmark: str
    case_id: str
    turns: tuple[Turn, ...]
    questions: tuple[EvalQuestion, ...]
    length_label: str = ""  # the history-length bucket this case belongs to (e.g. "1k")
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # A bare (role, content) pair would only fail later, deep inside a method's fit.
        if not all(isinstance(t, Turn) for t in self.turns):
            raise TypeError(f"{self.case_id}: history turns must be Turn objects")
        for q in self.questions:
            if q.cutoff > len(self.turns):
                raise ValueError(
                    f"{self.case_id}/{q.qid}: cutoff {q.cutoff} beyond the "
                    f"{len(self.turns)} turns of the history"
                )

    def history(self, cutoff: int) -> tuple[Turn, ...]:
        """The turns a question with this cutoff may see."""
        return self.turns[:cutoff]

    def by_cutoff(self) -> list[tuple[int, list[EvalQuestion]]]:
        """Questions grouped by cutoff, earliest first: one fit per group."""
        groups: dict[int, list[EvalQuestion]] = {}
        for q in self.questions:
            groups.setdefault(q.cutoff, []).append(q)
        return sorted(groups.items())


@dataclass(frozen=True)
class Benchmark:
    """A named set of cases; ``qtypes`` fixes the order of the per-type columns."""

    name: str
    cases: tuple[EvalCase, ...]
    qtypes: tuple[str, ...]
    generative: bool = False  # questions have free-text references (token F1 applies)
    description: str = ""

    @property
    def n_questions(self) -> int:
        return sum(len(c.questions) for c in self.cases)


def history_token_count(turns: Sequence[Turn], count: TokenCounter) -> int:
    """Tokens of a history in a ChatML-like template (content + ~5 template tokens per turn)."""
    return sum(count(turn.content) + 5 for turn in turns)
