"""E2P-shaped baseline: a single soft vector per user (Embedding-to-Prefix's prefix size).

E2P maps a precomputed user embedding to one soft token with a small network trained across
users; that network is not trained here. What is measured is the prefix shape: one vector of the
hidden size, fitted per user with the same optimiser, steps and windows as prompt tuning and LPM.
It shows how much a single token can carry at 1/8 of their per-user state.
"""

from __future__ import annotations

from lpm_local.research.eval.methods.prompt_tuning import PromptTuning


class SingleVectorPrefix(PromptTuning):
    name = "e2p"
    label = "E2P-style single-vector prefix (fitted per user)"
    tokens_setting = None  # always one virtual token
