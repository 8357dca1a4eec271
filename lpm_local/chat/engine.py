"""``ChatEngine``: a frozen backbone driven through ``inputs_embeds`` with an optional soft prefix.

The memory writes a soft prompt ``[M, hidden]`` (fp32); the engine casts it once to the
embedding dtype and puts it before the token embeddings, with attention-mask ones and labels
-100 over it. Without a prefix every path here is the bare model: logits ``allclose``
``model(input_ids).logits`` and greedy generation equals ``model.generate(input_ids)``, so
memory off is exactly the bare model.

Streaming runs ``model.generate`` in a worker thread and yields text from a
``TextIteratorStreamer``; a ``StoppingCriteria`` polls the cancel event after every token, so a
cancel stops the reply within one token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from lpm_local.backbones.loader import Backbone
from lpm_local.chat.encoding import Turn, control_token_ids, encode_chat

IGNORE_INDEX = -100  # the label HF losses skip


class Decoder(Protocol):
    """A faster native replacement for ``model.generate`` on one sequence (llama.cpp: see
    ``chat/llama_decoder.py``). Same inputs, same streamer protocol, new ids [1, N] back."""

    def generate(
        self,
        ids: torch.Tensor,
        prefix: torch.Tensor | None,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        cancel: threading.Event | None,
        streamer: TextIteratorStreamer | None,
        eos_token_ids: Sequence[int],
    ) -> torch.Tensor: ...


@dataclass
class GenerationStats:
    """Timings of the last ``stream``/``generate`` call (wall clock, seconds)."""

    prompt_tokens: int = 0
    prefix_tokens: int = 0
    new_tokens: int = 0
    time_to_first_token: float | None = None  # from the call to the first new token
    total_time: float = 0.0
    cancelled: bool = False
    started: float = field(default=0.0, repr=False)  # perf_counter() at the call

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens/s after the first one (the first pays for the prompt)."""
        if self.new_tokens < 2 or self.time_to_first_token is None:
            return None
        decode = self.total_time - self.time_to_first_token
        return (self.new_tokens - 1) / decode if decode > 0 else None


class ChatEngine:
    """Logits, losses and generation for one backbone, with or without a soft prefix."""

    def __init__(self, backbone: Backbone, decoder: Decoder | None = None):
        self.backbone = backbone
        # Replies (``generate``/``stream`` of one sequence) go through ``decoder`` when given;
        # logits, losses and batches always use the PyTorch model (they need its gradients).
        self.decoder = decoder
        self.last_stats: GenerationStats | None = None
        # Build the safe-encoding tokenizer copy now (~1 s for a 49k vocab) rather than on the
        # user's first message.
        control_token_ids(backbone.tokenizer)

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end a reply: the tokenizer's EOS, ``<|im_end|>`` and the model's own."""
        tok, found = self.backbone.tokenizer, []
        candidates = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
        configured = self.backbone.model.generation_config.eos_token_id
        candidates += configured if isinstance(configured, list) else [configured]
        unk = getattr(tok, "unk_token_id", None)
        for tid in candidates:
            if isinstance(tid, int) and tid >= 0 and tid != unk and tid not in found:
                found.append(tid)
        return found

    def encode(self, turns: Sequence[Turn], *, add_generation_prompt: bool = True) -> torch.Tensor:
        """Chat-templated ids [1, T] on the backbone's device (contents as data: a message never
        yields a control token)."""
        ids = encode_chat(
            self.backbone.tokenizer, turns, add_generation_prompt=add_generation_prompt
        )
        return torch.tensor([ids], dtype=torch.long, device=self.backbone.device)

    def embed_with_prefix(
        self,
        ids: torch.Tensor,
        prefix: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, T] + prefix [M, H] or [B, M, H] -> (inputs_embeds [B, M+T, H], mask [B, M+T]).

        The prefix is cast once, here, to the embedding dtype; gradients flow back through the
        cast into it. ``attention_mask`` [B, T] marks padding (pad on the right).
        """
        ids = ids.to(self.backbone.device)
        batch = ids.shape[0]
        mask = attention_mask.to(ids.device) if attention_mask is not None else torch.ones_like(ids)
        tokens = self.backbone.embed(ids)  # [B, T, H]
        if prefix is None:
            return tokens, mask
        soft = self._check_prefix(prefix, batch).to(device=tokens.device, dtype=tokens.dtype)
        ones = torch.ones(batch, soft.shape[1], dtype=mask.dtype, device=mask.device)
        return torch.cat([soft, tokens], dim=1), torch.cat([ones, mask], dim=1)

    @staticmethod
    def labels_with_prefix(labels: torch.Tensor, prefix_len: int) -> torch.Tensor:
        """labels [B, T] -> [B, M+T] with -100 over the M prefix positions (no loss there)."""
        pad = torch.full(
            (labels.shape[0], prefix_len), IGNORE_INDEX, dtype=labels.dtype, device=labels.device
        )
        return torch.cat([pad, labels], dim=1)

    def logits(
        self,
        ids: torch.Tensor,
        prefix: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits at the token positions only: [B, T, vocab].

        Without gradient unless the prefix takes one (scoring a soft prompt being fitted)."""
        embeds, mask = self.embed_with_prefix(ids, prefix, attention_mask=attention_mask)
        grad = prefix is not None and prefix.requires_grad
        with torch.set_grad_enabled(grad):
            out = self.backbone.model(inputs_embeds=embeds, attention_mask=mask)
        return out.logits[:, embeds.shape[1] - ids.shape[1] :]

    def loss(
        self,
        ids: torch.Tensor,
        labels: torch.Tensor,
        prefix: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over labelled positions (labels -100 are skipped).

        The backbone is frozen; a prefix that requires grad receives the gradient."""
        embeds, mask = self.embed_with_prefix(ids, prefix, attention_mask=attention_mask)
        full = self.labels_with_prefix(labels.to(embeds.device), embeds.shape[1] - ids.shape[1])
        return self.backbone.model(inputs_embeds=embeds, attention_mask=mask, labels=full).loss

    @torch.no_grad()
    def generate(
        self,
        ids: torch.Tensor,
        prefix: torch.Tensor | None = None,
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        streamer: TextIteratorStreamer | None = None,
    ) -> torch.Tensor:
        """New token ids [B, <= max_new_tokens] after ``ids`` [B, T] (greedy at temperature 0).

        Stops at an EOS id, at ``max_new_tokens``, or within one token of ``cancel`` being set.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(
                f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}"
            )
        if self.decoder is not None and ids.shape[0] == 1:
            if prefix is not None:
                self._check_prefix(prefix, 1)
            return self.decoder.generate(
                ids,
                prefix,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                cancel=cancel,
                streamer=streamer,
                eos_token_ids=self.eos_token_ids,
            )
        embeds, mask = self.embed_with_prefix(ids, prefix)
        if seed is not None:
            torch.manual_seed(seed)  # global RNG: generation is the only sampler in the process
        sampling = temperature > 0
        stops = StoppingCriteriaList([_CancelCriteria(cancel)]) if cancel is not None else None
        tok = self.backbone.tokenizer
        eos = self.eos_token_ids
        return self.backbone.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=None,  # the model's generation_config may carry one (Qwen3: 20); we use top_p
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
            stopping_criteria=stops,
            streamer=streamer,
        )

    def stream(
        self,
        turns: Sequence[Turn],
        *,
        prefix: torch.Tensor | None = None,
        cancel: threading.Event | None = None,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield the reply to ``turns`` as text chunks while it is generated.

        ``prefix``: soft prompt [M, H] (None: the bare model). After the iterator ends,
        ``last_stats`` holds token counts, time to first token and decode speed. Closing the
        iterator early stops the worker too. An error in the worker is raised here.
        """
        ids = self.encode(turns)
        if prefix is not None:
            self._check_prefix(prefix, 1)  # a bad shape fails here, not in the worker
        stats = GenerationStats(
            prompt_tokens=ids.shape[1], prefix_tokens=0 if prefix is None else prefix.shape[-2]
        )
        self.last_stats = stats
        stop = threading.Event()  # set when the consumer leaves or the caller cancels
        streamer = _TimedStreamer(
            self.backbone.tokenizer, stats, timeout=None, skip_prompt=True, skip_special_tokens=True
        )
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self.generate(
                    ids,
                    prefix,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    seed=seed,
                    cancel=_AnyEvent(stop, cancel),
                    streamer=streamer,
                )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                errors.append(exc)
                streamer.end()

        stats.started = time.perf_counter()
        worker = threading.Thread(target=work, name="lpm-generate", daemon=True)
        worker.start()
        try:
            for chunk in streamer:
                if cancel is not None and cancel.is_set():
                    break  # the worker stops within one token; its last text is not wanted
                if chunk:
                    yield chunk
        finally:
            stop.set()
            worker.join()
            stats.total_time = time.perf_counter() - stats.started
            stats.cancelled = bool(cancel is not None and cancel.is_set())
        if errors:
            raise errors[0]

    def _check_prefix(self, prefix: torch.Tensor, batch: int) -> torch.Tensor:
        """[M, H] -> [B, M, H]; [B, M, H] passes through. Shapes are checked, not broadcast."""
        hidden = self.backbone.hidden_size
        if prefix.dim() == 2:
            prefix = prefix.unsqueeze(0).expand(batch, -1, -1)
        if prefix.dim() != 3 or prefix.shape[0] != batch or prefix.shape[2] != hidden:
            raise ValueError(
                f"prefix must be [M, {hidden}] or [{batch}, M, {hidden}], got {list(prefix.shape)}"
            )
        return prefix


class _AnyEvent:
    """Set if either event is set (the consumer's private stop, the caller's cancel)."""

    def __init__(self, *events: threading.Event | None):
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class _CancelCriteria(StoppingCriteria):
    """Stops every sequence once the event is set; polled after each generated token."""

    def __init__(self, event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _TimedStreamer(TextIteratorStreamer):
    """A ``TextIteratorStreamer`` that also counts new tokens and stamps the first one."""

    def __init__(self, tokenizer, stats: GenerationStats, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.stats = stats

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:  # the first put is the (empty) prompt
            if self.stats.time_to_first_token is None:
                self.stats.time_to_first_token = time.perf_counter() - self.stats.started
            self.stats.new_tokens += int(value.numel())
        super().put(value)
