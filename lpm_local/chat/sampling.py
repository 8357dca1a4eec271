"""The next token from one position's logits, as transformers' sampling chooses it: greedy at
temperature 0, else logits / temperature, the top-p nucleus, one draw (the llama.cpp reply
path uses it, so a seeded reply is reproducible there too)."""

from __future__ import annotations

import numpy as np


def choose_token(
    logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator
) -> int:
    """Greedy at temperature 0, else a draw from the top-p nucleus of softmax(logits / T)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max()
    probs = np.exp(scaled)
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        # Keep the smallest set whose mass reaches top_p (always at least the top token).
        keep = order[: int(np.searchsorted(cumulative, top_p) + 1)]
        kept = probs[keep] / probs[keep].sum()
        return int(keep[rng.choice(len(keep), p=kept)])
    return int(rng.choice(len(probs), p=probs))
