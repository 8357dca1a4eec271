"""Full context: the history in the prompt, truncated to the backbone's window (most recent kept).

The budget is the window minus ``answer_reserve`` tokens for the question and the answer, so the
same truncated history serves every question of a fit and is prefilled once (``ContextCache``).
Once a history outgrows the window its oldest turns are simply gone: what this baseline costs in
KV cache grows with the history, up to the whole window.
"""

from __future__ import annotations

from collections.abc import Sequence

from lpm_local.chat.encoding import Turn
from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.methods.base import BackboneMethod, Conditioning, UserState


class FullContext(BackboneMethod):
    name = "full_context"
    label = "full context (truncated to the window)"

    def fit(self, history: Sequence[Turn]) -> UserState:
        budget = max(0, self.backbone.context_window - self.settings.answer_reserve)
        kept = most_recent(self.chat, history, budget)
        return UserState(
            tuple(history), extra={"context": kept, "dropped_turns": len(history) - len(kept)}
        )

    def condition(self, state: UserState, question: EvalQuestion) -> Conditioning:
        return Conditioning(context=state.extra["context"], cacheable=True)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "window": self.backbone.context_window,
            "answer_reserve": self.settings.answer_reserve,
        }


def most_recent(chat, history: Sequence[Turn], budget_tokens: int) -> tuple[Turn, ...]:
    """The longest suffix of whole turns whose ChatML tokens fit in ``budget_tokens``."""
    spent, start = 0, len(history)
    for i in range(len(history) - 1, -1, -1):
        cost = chat.turn_cost(history[i])
        if spent + cost > budget_tokens:
            break
        spent += cost
        start = i
    return tuple(history[start:])
