"""Option log-likelihood and greedy answers, with or without a soft prefix.

An option's score is the mean token log-probability of its tokens after the prompt (context,
question, assistant header, answer prefix): the windows come from ``qa_window`` (the chat's own
encoding) and the short path is ``token_logprobs`` over the four options in one batch.

Full-context baselines put thousands of history tokens before every question. ``ContextCache``
runs that shared prefix once, keeps its KV cache, and scores each question's options against it
(cropping the cache back after each), so a long history is prefilled once per fit instead of
four times per question. The two paths agree (tested); only the order of float sums differs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from lpm_local.memory.lm import token_logprobs
from lpm_local.memory.windows import IGNORE, Window


def prompt_length(windows: Sequence[Window]) -> int:
    """Tokens before the first labelled one; every window must share them (same prompt)."""
    if not windows:
        raise ValueError("no windows to score")
    starts = []
    for w in windows:
        labelled = [i for i, label in enumerate(w.labels) if label != IGNORE]
        if not labelled:
            raise ValueError("an option has no tokens to score")
        starts.append(labelled[0])
    first = starts[0]
    if any(
        s != first or w.input_ids[:first] != windows[0].input_ids[:first]
        for s, w in zip(starts, windows)
    ):
        raise ValueError("options of one question must share the same prompt tokens")
    return first


def score_windows(
    model: torch.nn.Module, soft: torch.Tensor | None, windows: Sequence[Window]
) -> list[float]:
    """Mean target-token log-prob per window, all options in one batch.

    ``soft``: one prefix [M, H] for every option (or None)."""
    prompt_length(windows)  # same prompt for every option, or a clear error
    batch = None if soft is None else soft.float().unsqueeze(0).expand(len(windows), -1, -1)
    with torch.no_grad():
        sums, counts = token_logprobs(model, batch, list(windows))
    return (sums / counts).tolist()


class ContextCache:
    """The KV cache of ``soft`` [M, H] (or None) followed by ``prefix_ids``, reused by every
    question whose prompt starts with those ids. Not thread-safe; one per (method, fit)."""

    def __init__(
        self, model: torch.nn.Module, soft: torch.Tensor | None, prefix_ids: Sequence[int]
    ):
        self.model = model
        self.prefix_ids = tuple(prefix_ids)
        self._decoder = model.get_decoder()
        self._head = model.get_output_embeddings()
        self._embed = model.get_input_embeddings()
        self.cache = DynamicCache(config=model.config)
        self.soft_tokens = 0 if soft is None else soft.shape[-2]
        parts = [] if soft is None else [soft.float().reshape(1, -1, soft.shape[-1])]
        if self.prefix_ids:
            parts.append(self._embed(self._ids(self.prefix_ids)).float())
        self.last_hidden: torch.Tensor | None = None
        if parts:
            embeds = torch.cat(parts, dim=1).to(self._embed.weight.dtype)  # the one cast
            self.last_hidden = self._run_embeds(embeds)
        self.length = self.cache.get_seq_length() if parts else 0

    def score(self, windows: Sequence[Window]) -> list[float]:
        """Mean log-prob of each window's labelled tokens; windows must start with the prefix."""
        start = prompt_length(windows)
        ids = windows[0].input_ids
        if tuple(ids[: len(self.prefix_ids)]) != self.prefix_ids:
            raise ValueError("these windows do not start with the cached prefix")
        try:
            hidden = self._extend(ids[len(self.prefix_ids) : start])
            base = self.cache.get_seq_length()
            scores = []
            for w in windows:
                body = list(w.input_ids[start:])
                logps = [self._logprobs(hidden, body[:1])]
                if len(body) > 1:
                    logps.append(self._logprobs(self._run(body[:-1]), body[1:]))
                    self._crop(base)
                scores.append(torch.cat(logps).mean().item())
            return scores
        finally:
            self._crop(self.length)

    def greedy(self, ids: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int]) -> list[int]:
        """Greedy continuation of prefix + ``ids`` (ids must start with the prefix)."""
        if tuple(ids[: len(self.prefix_ids)]) != self.prefix_ids:
            raise ValueError("these ids do not start with the cached prefix")
        out: list[int] = []
        try:
            hidden = self._extend(ids[len(self.prefix_ids) :])
            for _ in range(max_new_tokens):
                token = int(self._head(hidden).argmax(dim=-1)[-1])
                if token in eos_ids:
                    break
                out.append(token)
                hidden = self._run([token])
            return out
        finally:
            self._crop(self.length)

    # -- internals ---------------------------------------------------------------------------

    def _crop(self, length: int) -> None:
        excess = self.cache.get_seq_length() - length
        if excess > 0:
            # A negative count removes that many tokens, in every transformers version (a
            # positive one meant "keep this many" before 5.x and is refused since).
            self.cache.crop(-excess)

    def _ids(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self._embed.weight.device)

    @torch.no_grad()
    def _run_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Feed [1, T, H] through the decoder with the cache; the last hidden states [T, H]."""
        out = self._decoder(inputs_embeds=embeds, past_key_values=self.cache, use_cache=True)
        return out.last_hidden_state[0]

    def _run(self, ids: Sequence[int]) -> torch.Tensor:
        return self._run_embeds(self._embed(self._ids(ids)))

    def _extend(self, ids: Sequence[int]) -> torch.Tensor:
        """Hidden state [1, H] that predicts the token after prefix + ``ids``."""
        if ids:
            return self._run(ids)[-1:]
        if self.last_hidden is None:
            raise ValueError("nothing to condition on: empty prefix and empty prompt")
        return self.last_hidden[-1:]

    @torch.no_grad()
    def _logprobs(self, hidden: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
        """log p(targets[i] | hidden[i]) for hidden [K, H]: [K] fp32."""
        logits = self._head(hidden[-len(targets) :]).float()
        index = torch.tensor(list(targets), device=logits.device).unsqueeze(1)
        return logits.log_softmax(dim=-1).gather(1, index).squeeze(1)
