"""LPM with a routed slot bank (``memory/routing.py``): many more slots than a turn reads.

Each question reads the ``pick`` groups of the bank whose keys (the backbone's reading of one
user message each) are nearest to it: the same soft tokens per turn as ``lpm`` and
``prompt_tuning`` (``MethodSettings.soft_tokens``), with ``groups / pick`` times their per-user
state. Fitted like ``lpm``: same windows, optimiser, steps and learning rate, and like the
app's refit of a bank, as a low-rank change (``RefitSettings.change_rank``): its trainable
numbers per user are (slots + hidden) * rank.
"""

from __future__ import annotations

from lpm_local.memory.frozen import load_frozen_memory
from lpm_local.memory.refit import RefitSettings
from lpm_local.memory.routing import bank_config
from lpm_local.research.eval.methods.base import MethodSettings
from lpm_local.research.eval.methods.lpm import LatentPersonalMemory

# Groups per user and groups read per turn: 32 groups hold one message's words each for a
# history of up to 32 distinct user messages before groups are shared.
GROUPS = 32
PICK = 4


class RoutedBankLpm(LatentPersonalMemory):
    name = "lpm_bank"
    label = f"LPM, routed bank ({GROUPS} groups, {PICK} read per turn)"
    change_rank = RefitSettings().change_rank

    def __init__(self, backbone, settings: MethodSettings | None = None):
        super().__init__(backbone, settings)
        tokens = self.settings.soft_tokens
        pick = PICK if tokens % PICK == 0 else 1
        config = bank_config(backbone.hidden_size, soft_tokens=tokens, groups=GROUPS, pick=pick)
        self.frozen = load_frozen_memory(backbone, config)

    def describe(self) -> dict:
        c = self.frozen.config
        return {
            **super().describe(),
            "projector": f"routed bank ({c.route_groups} groups, {c.route_pick} per turn)",
            "slot_init": "one group per user message: its reading as key, its salient words",
        }
