"""The names of the compared methods, with no heavy import: the CLI's choices and the runner's
registry read the same lists (``--help`` must not import torch to know them)."""

from __future__ import annotations

# Order of the report's rows. ``e2p`` and the two LPM ablations are extras (not in the default
# set); the recall benchmark's table is no memory, full context, prompt tuning and the LPM rows.
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
FITTED = ("prompt_tuning", "lora", "lpm", "e2p", "lpm_untrained")  # methods with a learning rate
