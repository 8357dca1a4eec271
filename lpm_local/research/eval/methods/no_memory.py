"""No memory: the bare backbone sees only the question (the floor every method must beat)."""

from __future__ import annotations

from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.methods.base import BackboneMethod, Conditioning, UserState


class NoMemory(BackboneMethod):
    name = "no_memory"
    label = "no memory"

    def condition(self, state: UserState, question: EvalQuestion) -> Conditioning:
        return Conditioning()
