"""Two ablations of LPM that separate what its parts bring (the recall table's extra rows).

- ``lpm_untrained``: LPM with the untrained (identity) projector in place of the shipped one:
  prompt tuning that starts from the history's salient tokens. Against ``prompt_tuning`` it
  measures the start; against ``lpm`` the trained projector.
- ``lpm_unfitted``: the shipped projector reading the salient-token slots as they start, never
  fitted (zero steps): what the projector does without the per-user refit.

Both are ``LatentPersonalMemory`` with one thing changed, so any change to how LPM fits or reads
its slots reaches them too.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from lpm_local.memory.frozen import IDENTITY_SEED
from lpm_local.memory.projector import prompt_tuning_projector
from lpm_local.research.eval.methods.base import MethodSettings
from lpm_local.research.eval.methods.lpm import LatentPersonalMemory


class UntrainedProjectorLpm(LatentPersonalMemory):
    name = "lpm_untrained"
    label = "LPM, untrained projector (prompt tuning from the salient start)"

    def __init__(self, backbone, settings: MethodSettings | None = None):
        super().__init__(backbone, settings)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(IDENTITY_SEED)  # the identity projector a backbone without one gets
            projector = prompt_tuning_projector(self.frozen.config)
        sha = projector.sha256()
        projector.to(backbone.device).eval().requires_grad_(False)
        self.frozen = replace(self.frozen, projector=projector, projector_sha256=sha, shipped=False)


class UnfittedLpm(LatentPersonalMemory):
    name = "lpm_unfitted"
    label = "LPM, salient slots not fitted"

    def __init__(self, backbone, settings: MethodSettings | None = None):
        super().__init__(backbone, replace(settings or MethodSettings(), steps=0))

    def describe(self) -> dict:
        return {**super().describe(), "slot_init": "salient tokens, not fitted"}
