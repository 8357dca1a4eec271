"""The names of the compared methods, with no heavy import: the CLI's choices and the runner's
registry read the same lists (``--help`` must not import torch to know them)."""

from __future__ import annotations

# Order of the report's rows. ``e2p``, the two LPM ablations and the routed bank are extras
# (not in the default set); the recall benchmark's table is no memory, full context, prompt
# tuning and the LPM rows.
METHODS = (
    "no_memory",
    "full_context",
    "retrieval",
    "prompt_tuning",
    "lora",
    "lpm",
    "e2p",
    "lpm_untrained",
    "lpm_unfitted",
    "lpm_bank",
)
DEFAULT_METHODS = METHODS[:6]
RECALL_METHODS = (
    "no_memory",
    "full_context",
    "prompt_tuning",
    "lpm_untrained",
    "lpm_unfitted",
    "lpm",
)
FITTED = (
    "prompt_tuning",
    "lora",
    "lpm",
    "e2p",
    "lpm_untrained",
    "lpm_bank",
)  # methods with a learning rate
