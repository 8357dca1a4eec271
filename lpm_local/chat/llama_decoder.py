"""Replies through llama.cpp, with the soft prompt in front, for backbones that came from a GGUF.

The transformers path decodes the embedded backbones at ~0.2x llama.cpp's speed on a small CPU
(fp32 matmuls against llama.cpp's quantized kernels), but prefills a prompt faster than
llama.cpp does. So PyTorch prefills the soft prompt and the prompt in one pass, exactly as the
reference path does, and its KV cache is handed to llama.cpp (``chat/llama_kv.py``), which then
decodes one token per step. Where the handoff cannot write llama.cpp's cache, llama.cpp takes
the soft prompt itself, as a batch of input embeddings (positions 0..M-1) before the prompt's
token ids. The GGUF file is the one the backbone was converted from, so the weights and
the vocabulary are the same; only the arithmetic differs (llama.cpp multiplies in quantized
form), which keeps next-token logits within a few percent (rel-L2) of the reference.

Only replies take this path. Scoring and the refit need gradients and stay in PyTorch.

The dependency is the optional extra ``lpm-local[fast]`` (``llama-cpp-python``, compiled from
source at install). With it installed this is the reply path of a GGUF backbone on the CPU;
``LPM_DECODER=transformers`` opts out, and without the extra ``open_decoder`` returns None and
the engine keeps its transformers path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lpm_local.backbones.gguf_file import gguf_file_for
from lpm_local.chat.sampling import choose_token

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from lpm_local.backbones.loader import Backbone
    from lpm_local.chat.llama_kv import CacheLayout, TorchPrefill

log = logging.getLogger(__name__)

ENV_SWITCH = "LPM_DECODER"  # "transformers" keeps replies in PyTorch; unset: llama.cpp if it can
OPT_OUT = ("transformers", "torch", "pytorch", "off")
# The context is sized to the request (prompt + prefix + reply) rounded up to this, so a short
# chat does not hold a KV cache for the model's whole window; it grows when a longer one comes.
CONTEXT_STEP = 1024


def llama_cpp_available() -> bool:
    """Whether the ``[fast]`` extra is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def open_decoder(
    backbone: Backbone, *, progress: Callable[[str, float | None], None] | None = None
) -> LlamaDecoder | None:
    """A llama.cpp decoder for ``backbone`` where one can serve it, else None (the caller keeps
    the transformers path): the extra is installed, the backbone is a GGUF one on the CPU, and
    ``LPM_DECODER`` is not ``transformers``. ``progress`` hears the one-time assembly of a
    multi-part GGUF (Qwen2.5-0.5B: ~0.5 GB written next to the converted cache).

    The default by measurement (README "Speed"): decode at 0.9-1.0x llama.cpp's own speed on
    both embedded backbones and a first token no later than the transformers path's (its
    prefill is the transformers path's). Greedy replies equal the transformers path's until a
    step where its two best tokens are within a few tenths of a logit; there they may part."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in OPT_OUT:
        return None
    if backbone.device.type != "cpu" or not llama_cpp_available():
        return None
    path = gguf_file_for(backbone.name, progress=progress)
    if path is None:
        return None
    try:
        return LlamaDecoder(path, hidden_size=backbone.hidden_size, prefill_backbone=backbone)
    except (OSError, RuntimeError, ValueError) as exc:
        # A broken build or an unreadable file must not stop the chat: say so, use the fallback.
        log.warning("llama.cpp decoder unavailable (%s); using transformers", exc)
        return None


def _threads() -> int:
    """``LPM_LLAMA_THREADS``, else every core this process may run on. llama.cpp's threads
    spin at each barrier, so on a machine already busy with other work fewer threads can be
    faster (measured here at load 11 on 2 cores: 1 thread 13-19 tokens/s, 2 threads 1-2)."""
    configured = os.environ.get("LPM_LLAMA_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LlamaDecoder:
    """One GGUF model in llama.cpp, decoding one sequence at a time from embeddings + ids.

    Not thread-safe: one reply at a time (a lock enforces it). ``close`` frees the native
    memory; the object also frees it when collected.
    """

    def __init__(
        self,
        gguf_path: Path,
        *,
        hidden_size: int,
        threads: int | None = None,
        prefill_backbone: Backbone | None = None,
    ):
        """``prefill_backbone``: the same model in PyTorch, to compute each prompt's KV cache
        (faster than llama.cpp's prefill on a CPU: ``chat/llama_kv.py``); None: llama.cpp
        prefills too."""
        from llama_cpp import llama_cpp as api

        # llama-cpp-python routes llama.cpp's log through this logger and prints every load step
        # to stderr unless it is set above INFO; the TUI draws on that terminal.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self._api = api
        self.path = Path(gguf_path)
        self.threads = threads or _threads()
        self._lock = threading.Lock()
        api.llama_backend_init()
        params = api.llama_model_default_params()
        params.n_gpu_layers = 0
        model = api.llama_model_load_from_file(str(self.path).encode(), params)
        if not model:
            raise RuntimeError(f"llama.cpp could not load {self.path}")
        self._model = model
        self._vocab = api.llama_model_get_vocab(model)
        self.n_vocab = int(api.llama_vocab_n_tokens(self._vocab))
        self.hidden_size = int(api.llama_model_n_embd(model))
        if self.hidden_size != hidden_size:
            self.close()
            raise ValueError(
                f"{self.path.name} has hidden size {self.hidden_size}, the backbone {hidden_size}"
            )
        self.train_context = int(api.llama_model_n_ctx_train(model))
        self._ctx = None
        self.n_ctx = 0
        self._step = api.llama_batch_init(1, 0, 1)  # one token per decode step, reused
        self.prefill_backbone = prefill_backbone
        self._layout: CacheLayout | None = None  # learned per context (probe_layout)
        self._pending: np.ndarray | None = None  # logits of a prefill done in PyTorch
        self._position = 0

    # -- the native context ---------------------------------------------------------------

    def _ensure_context(self, needed: int) -> None:
        """A context whose KV cache holds ``needed`` positions (recreated only to grow)."""
        if needed > self.train_context:
            raise ValueError(
                f"{needed} positions exceed the model's window of {self.train_context}"
            )
        if self._ctx is not None and needed <= self.n_ctx:
            self._api.llama_memory_clear(self._api.llama_get_memory(self._ctx), True)
            return
        api = self._api
        if self._ctx is not None:
            api.llama_free(self._ctx)
            self._ctx = None
        size = min(self.train_context, -(-needed // CONTEXT_STEP) * CONTEXT_STEP)
        params = api.llama_context_default_params()
        params.n_ctx = size
        params.n_batch = size  # the whole prefill in one llama_decode call
        params.n_ubatch = min(size, 512)
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.no_perf = True
        ctx = api.llama_init_from_model(self._model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not make a context of {size} positions")
        self._ctx, self.n_ctx = ctx, size
        self._layout = None

    def _cache_layout(self) -> CacheLayout | None:
        """The KV state layout of this context, read from the state llama.cpp writes for one
        decoded token (then cleared); None when it is not one ``llama_kv`` can write."""
        if self._layout is None:
            from lpm_local.chat.llama_kv import probe_layout

            api = self._api
            self._decode_batch(0, ids=[0])
            size = api.llama_state_seq_get_size(self._ctx, 0)
            buffer = (ctypes.c_uint8 * size)()
            written = api.llama_state_seq_get_data(self._ctx, buffer, size, 0)
            api.llama_memory_clear(api.llama_get_memory(self._ctx), True)
            rope = api.llama_model_rope_type(self._model)
            self._layout = (
                probe_layout(
                    bytes(buffer)[:written],
                    n_layer=int(api.llama_model_n_layer(self._model)),
                    permute_keys=rope == api.LLAMA_ROPE_TYPE_NORM,
                )
                or False
            )  # False: probed, not understood (kept so it is not probed again)
        return self._layout or None

    def _decode_batch(
        self, start: int, *, ids: Sequence[int] = (), vectors: np.ndarray | None = None
    ) -> None:
        """Prefill token ``ids`` or embedding ``vectors`` [n, H] at positions ``start``..,
        with logits for the last position only."""
        api = self._api
        count = len(ids) if vectors is None else vectors.shape[0]
        batch = api.llama_batch_init(count, 0 if vectors is None else self.hidden_size, 1)
        try:
            if vectors is not None:
                flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
                ctypes.memmove(batch.embd, flat.ctypes.data, flat.nbytes)
            for i in range(count):
                if vectors is None:
                    batch.token[i] = int(ids[i])
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if i == count - 1 else 0
            batch.n_tokens = count
            what = "prompt" if vectors is None else "soft prompt"
            self._check(api.llama_decode(self._ctx, batch), what)
        finally:
            api.llama_batch_free(batch)

    def _decode_one(self, token: int, pos: int) -> None:
        step = self._step
        step.token[0] = token
        step.pos[0] = pos
        step.n_seq_id[0] = 1
        step.seq_id[0][0] = 0
        step.logits[0] = 1
        step.n_tokens = 1
        self._check(self._api.llama_decode(self._ctx, step), "next token")

    def _last_logits(self) -> np.ndarray:
        if self._pending is not None:
            return self._pending
        pointer = self._api.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    @staticmethod
    def _check(code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"llama.cpp failed to decode the {what} (code {code})")

    # -- public ---------------------------------------------------------------------------

    def prefill(self, prefix: np.ndarray | None, ids: Sequence[int], *, reserve: int = 0) -> None:
        """Clear the cache and run prefix vectors [M, H] (fp32) then ``ids`` through the model;
        ``reserve`` positions are kept free for the reply. Logits of the last id are ready."""
        if not ids:
            raise ValueError("the prompt has no tokens")
        soft = None if prefix is None else np.asarray(prefix, dtype=np.float32)
        if soft is not None and (soft.ndim != 2 or soft.shape[1] != self.hidden_size):
            raise ValueError(f"prefix must be [M, {self.hidden_size}], got {list(soft.shape)}")
        m = 0 if soft is None else soft.shape[0]
        self._ensure_context(m + len(ids) + reserve)
        self._pending = None
        if m:
            self._decode_batch(0, vectors=soft)
        self._decode_batch(m, ids=ids)
        self._position = m + len(ids)

    def load_prefill(self, prefill: TorchPrefill, *, reserve: int = 0) -> bool:
        """Clear the cache and fill it with a prefill computed in PyTorch (keys and values of
        every position, the last logits); ``reserve`` positions are kept free for the reply.
        False (the cache left empty) when this context's layout is not one that can be
        written: the caller prefills through llama.cpp instead."""
        from lpm_local.chat.llama_kv import state_bytes

        api = self._api
        self._ensure_context(prefill.positions + reserve)
        self._pending = None
        layout = self._cache_layout()
        if layout is None:
            return False
        data = state_bytes(layout, prefill)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        api.llama_memory_clear(api.llama_get_memory(self._ctx), True)
        if api.llama_state_seq_set_data(self._ctx, buffer, len(data), 0) != len(data):
            api.llama_memory_clear(api.llama_get_memory(self._ctx), True)
            return False
        self._pending = np.asarray(prefill.logits, dtype=np.float32)
        self._position = prefill.positions
        return True

    def feed(self, token: int) -> None:
        """Append one token after the last decoded position (teacher forcing, scoring)."""
        self._decode_one(int(token), self._position)
        self._pending = None
        self._position += 1

    def next_logits(self) -> np.ndarray:
        """A copy of the logits after the last decoded position, fp32 [vocab]."""
        return self._last_logits().copy()

    def tokens(
        self,
        prefix: np.ndarray | None,
        ids: Sequence[int],
        *,
        max_new_tokens: int,
        eos_token_ids: Sequence[int],
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int | None = None,
        cancel: threading.Event | None = None,
        prefilled: TorchPrefill | None = None,
    ) -> Iterator[int]:
        """Yield new token ids after ``prefix`` + ``ids`` (greedy at temperature 0).

        ``prefilled``: the same prefix and ids already run through PyTorch (``llama_kv``);
        its cache is loaded instead of prefilling here, if this context can take it.

        Stops after an EOS id (yielded last, as ``model.generate`` returns it), at
        ``max_new_tokens``, or before the next token once ``cancel`` is set. The same order of
        warpers as transformers' sampling: logits divided by ``temperature``, then the top-p
        nucleus, then one draw.
        """
        rng = np.random.default_rng(seed)
        eos = set(eos_token_ids)
        with self._lock:
            if prefilled is None or not self.load_prefill(prefilled, reserve=max_new_tokens):
                self.prefill(prefix, ids, reserve=max_new_tokens)
            for step in range(max_new_tokens):
                if cancel is not None and cancel.is_set():
                    return
                token = choose_token(self._last_logits(), temperature, top_p, rng)
                yield token
                if token in eos:
                    return
                if step + 1 < max_new_tokens:
                    self.feed(token)

    def close(self) -> None:
        """Free the context, the step batch and the model (idempotent)."""
        api = getattr(self, "_api", None)
        if api is None:
            return
        if getattr(self, "_ctx", None):
            api.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_step", None) is not None:
            api.llama_batch_free(self._step)
            self._step = None
        if getattr(self, "_model", None):
            api.llama_model_free(self._model)
            self._model = None
        self._api = None

    def __del__(self) -> None:
        self.close()

    # -- the engine's seam ----------------------------------------------------------------

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
        streamer,
        eos_token_ids: Sequence[int],
    ) -> torch.Tensor:
        """``ChatEngine.generate`` for one sequence: ids [1, T], prefix [M, H] or [1, M, H]
        (any dtype; fp32 goes in). Feeds ``streamer`` the way ``model.generate`` does: the
        (empty) prompt first, then each token, then ``end()``. Returns new ids [1, N]."""
        import torch

        if ids.shape[0] != 1:
            raise ValueError(f"the llama.cpp decoder takes one sequence, got {ids.shape[0]}")
        soft = None
        if prefix is not None:
            soft = prefix.detach().to(device="cpu", dtype=torch.float32)
            soft = soft[0] if soft.dim() == 3 else soft
            soft = soft.numpy()
        new: list[int] = []
        try:
            if streamer is not None:
                streamer.put(torch.empty((1, 0), dtype=torch.long))
            prefilled = None
            if self.prefill_backbone is not None:
                from lpm_local.chat.llama_kv import torch_prefill

                prefilled = torch_prefill(self.prefill_backbone, ids, prefix)
            for token in self.tokens(
                soft,
                ids[0].tolist(),
                max_new_tokens=max_new_tokens,
                eos_token_ids=eos_token_ids,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                cancel=cancel,
                prefilled=prefilled,
            ):
                new.append(token)
                if streamer is not None:
                    streamer.put(torch.tensor([token], dtype=torch.long))
        finally:
            if streamer is not None:
                streamer.end()
        return torch.tensor([new], dtype=torch.long)
