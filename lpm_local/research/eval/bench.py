"""``lpm bench``: speed and memory of the memory path on the machine it runs on, as JSON.

Measured: decode tokens/s (and, for a GGUF backbone, the three decode paths side by side:
``decode_compare``); time to first token against history length, LPM (M soft tokens + the
question) against full context (the history + the question); the projector's cost per turn;
slot refit (``fit_slots``) time per step and per 1K history tokens; peak memory (process RSS,
and ``torch.cuda.max_memory_allocated`` on CUDA). The same code runs on CPU and CUDA.

``random_backbone("qwen3-4b")`` builds a random-weight Qwen3 of the real shape from a
``Qwen3Config``: speed and memory depend on the shape, not on the weights, so they
can be measured where the weights are not at hand. Its tokenizer is borrowed (any ChatML one).
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from lpm_local.errors import BadInput, ModelNotAvailable
from lpm_local.research.eval.decode_compare import compare_decoders
from lpm_local.research.eval.filler import filler_history
from lpm_local.research.eval.report import kv_bytes_per_token

Progress = Callable[[str, "float | None"], None]
QUESTION = "Can you remind me what I told you about my plans for the weekend?"
LONG_PROMPT = "Tell me a long story about a lighthouse keeper and a storm."

# Real Qwen3 shapes (hidden, layers, heads, KV heads, MLP width, tied embeddings); head_dim 128,
# vocab 151936 for all (the published configs).
SHAPES = {
    "qwen3-0.6b": dict(
        hidden_size=1024,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        intermediate_size=3072,
        tie_word_embeddings=True,
    ),
    "qwen3-1.7b": dict(
        hidden_size=2048,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        intermediate_size=6144,
        tie_word_embeddings=True,
    ),
    "qwen3-4b": dict(
        hidden_size=2560,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=9728,
        tie_word_embeddings=True,
    ),
    "qwen3-8b": dict(
        hidden_size=4096,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=12288,
        tie_word_embeddings=False,
    ),
}
COMMON = dict(
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
)


@dataclass(frozen=True)
class BenchSettings:
    lengths: tuple[int, ...] = (256, 1024, 4096)  # history tokens for the TTFT curve
    new_tokens: int = 32  # tokens decoded for the tokens/s figure
    repeats: int = 3  # TTFT = median of this many runs
    refit_history_tokens: int = 1024
    refit_steps: int = (
        5  # timed fit_slots steps (the app's refit runs up to 30; per-step is reported)
    )
    projector_repeats: int = 20

    def __post_init__(self) -> None:
        if not self.lengths or min(self.lengths) < 16:
            raise ValueError(f"lengths must be >= 16 tokens, got {self.lengths}")
        if min(self.new_tokens, self.repeats, self.refit_steps, self.projector_repeats) < 1:
            raise ValueError("new_tokens, repeats, refit_steps and projector_repeats must be >= 1")
        if self.refit_history_tokens < 64:
            raise ValueError(f"refit_history_tokens must be >= 64, got {self.refit_history_tokens}")


def random_backbone(shape: str | dict, *, tokenizer, device: str | None = None):
    """A ``Backbone`` with random weights of a real Qwen3 shape (name in ``SHAPES``, or a dict of
    ``Qwen3Config`` fields); bf16 on CUDA, fp32 on CPU, like ``load_backbone``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from lpm_local.backbones.loader import Backbone, _resolve_device

    fields = {**COMMON, **(SHAPES[shape] if isinstance(shape, str) and shape in SHAPES else {})}
    if isinstance(shape, dict):
        fields.update(shape)
    elif shape not in SHAPES:
        raise BadInput(f"unknown shape {shape!r}", hint=f"choose from {', '.join(SHAPES)}")
    if len(tokenizer) > fields["vocab_size"]:
        raise BadInput(
            f"the tokenizer has {len(tokenizer)} tokens, more than the vocabulary "
            f"{fields['vocab_size']} of this shape"
        )
    dev = _resolve_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(
        **fields, eos_token_id=im_end, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the target dtype: no fp32 copy of an 8B model
    try:
        with dev:
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval().requires_grad_(False)
    name = shape if isinstance(shape, str) else "custom"
    return Backbone(
        name=f"random:{name}",
        model=model,
        tokenizer=tokenizer,
        device=dev,
        dtype=dtype,
        hidden_size=fields["hidden_size"],
        context_window=min(fields["max_position_embeddings"], 32768),
        quantization="none",
    )


def borrowed_tokenizer(path: str | None = None):
    """A ChatML tokenizer for a random-weight model: ``path``, else the embedded SmolLM2's."""
    from transformers import AutoTokenizer

    from lpm_local import locations

    folder = path or locations.model_cache_dir("smollm2-135m")
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailable(
            f"no tokenizer at {folder} ({exc.__class__.__name__}): pass --tokenizer "
            "PATH, or load smollm2-135m once so its cache exists"
        ) from None


def run_bench(
    backbone,
    settings: BenchSettings | None = None,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict:
    """All measurements for one backbone; a JSON-able dict."""
    from lpm_local.chat.encoding import ChatFormat
    from lpm_local.chat.engine import ChatEngine
    from lpm_local.memory.frozen import load_frozen_memory

    settings = settings or BenchSettings()
    say = progress or (lambda stage, fraction=None: None)
    cuda = backbone.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(backbone.device)
    engine, chat = ChatEngine(backbone), ChatFormat(backbone.tokenizer)
    frozen = load_frozen_memory(backbone)
    slots = frozen.fresh_slots([], seed=0)
    count = lambda text: len(backbone.tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    memory = {"rss_after_load": _rss()}
    say("warm-up", 0.0)
    engine.generate(_ids(backbone, chat, [], "Hi"), None, max_new_tokens=2)
    out = {
        "backbone": backbone.name,
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "quantization": backbone.quantization,
        "context_window": backbone.context_window,
        "torch_threads": torch.get_num_threads(),
        "kv_bytes_per_token": kv_bytes_per_token(backbone),
        "soft_tokens": frozen.config.n_soft_tokens,
        # "projector" is the overhead measured below; this says which projector it was.
        "projector_kind": "shipped" if frozen.shipped else frozen.projector.kind,
        "settings": asdict(settings),
        # Other processes share the machine: the load says how much these timings can be trusted.
        "load_average_start": list(os.getloadavg()),
    }
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(backbone.device)
    say("decode speed", 0.05)
    out["decode"] = _decode(engine, settings)
    _check(cancel)
    say("decode paths: transformers, llama.cpp with the soft prompt, llama.cpp", 0.07)
    out["decode_paths"] = compare_decoders(
        backbone, frozen, slots, rounds=settings.repeats, new_tokens=max(settings.new_tokens, 2)
    )
    out["ttft"] = []
    for k, length in enumerate(settings.lengths):
        _check(cancel)
        say(f"time to first token, {length}-token history", 0.1 + 0.6 * k / len(settings.lengths))
        out["ttft"].append(_ttft(backbone, engine, chat, frozen, slots, length, settings, count))
    _check(cancel)
    say("projector overhead", 0.7)
    out["projector"] = _projector(frozen, slots, settings, out["ttft"])
    say("refit", 0.75)
    out["refit"] = _refit(backbone, chat, frozen, slots, settings, count)
    memory["rss_now"] = _rss()
    memory["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if cuda:
        memory["cuda_max_allocated"] = torch.cuda.max_memory_allocated(backbone.device)
    out["memory_bytes"] = memory
    out["load_average_end"] = list(os.getloadavg())
    say("bench done", 1.0)
    return out


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise KeyboardInterrupt("bench cancelled")


def _ids(backbone, chat, context, question: str) -> torch.Tensor:
    from lpm_local.chat.encoding import Turn
    from lpm_local.memory.windows import as_turn

    ids = chat.prompt_ids([*map(as_turn, context), Turn("user", question)])
    return torch.tensor([ids], device=backbone.device)


def _sync(backbone) -> None:
    if backbone.device.type == "cuda":
        torch.cuda.synchronize(backbone.device)


def _timed(backbone, fn) -> float:
    _sync(backbone)
    start = time.perf_counter()
    fn()
    _sync(backbone)
    return time.perf_counter() - start


def _decode(engine, settings: BenchSettings) -> dict:
    from lpm_local.chat.encoding import Turn

    for _ in engine.stream([Turn("user", LONG_PROMPT)], max_new_tokens=settings.new_tokens):
        pass
    stats = engine.last_stats
    return {
        "new_tokens": stats.new_tokens,
        "tokens_per_s": stats.decode_tokens_per_s,
        "time_to_first_token_s": stats.time_to_first_token,
        "prompt_tokens": stats.prompt_tokens,
    }


def _ttft(
    backbone, engine, chat, frozen, slots, length: int, settings: BenchSettings, count
) -> dict:
    history = filler_history(random.Random(f"bench:{length}"), length, count)
    full = _ids(backbone, chat, history, QUESTION)
    while full.shape[1] > backbone.context_window - 16 and history:
        history = history[2:]  # the window is the limit of full context: drop the oldest exchange
        full = _ids(backbone, chat, history, QUESTION)
    question = _ids(backbone, chat, [], QUESTION)

    def lpm() -> None:
        soft, _ = frozen.soft(slots, QUESTION)
        engine.generate(question, soft, max_new_tokens=1)

    full_s = statistics.median(
        _timed(backbone, lambda: engine.generate(full, None, max_new_tokens=1))
        for _ in range(settings.repeats)
    )
    lpm_s = statistics.median(_timed(backbone, lpm) for _ in range(settings.repeats))
    per_token = kv_bytes_per_token(backbone)
    lpm_tokens = question.shape[1] + frozen.config.n_soft_tokens
    return {
        "history_tokens": length,
        "history_turns": len(history),
        "full_context_tokens": int(full.shape[1]),
        "lpm_tokens": int(lpm_tokens),
        "full_context_s": full_s,
        "lpm_s": lpm_s,
        "full_context_kv_bytes": int(full.shape[1]) * per_token,
        "lpm_kv_bytes": int(lpm_tokens) * per_token,
    }


def _projector(frozen, slots, settings: BenchSettings, ttft: list[dict]) -> dict:
    times = [
        _timed(frozen.backbone, lambda: frozen.soft(slots, QUESTION))
        for _ in range(settings.projector_repeats)
    ]
    median = statistics.median(times)
    share = median / ttft[0]["lpm_s"] if ttft and ttft[0]["lpm_s"] else None
    return {
        "per_turn_s": median,
        "share_of_lpm_ttft": share,
        "params": sum(p.numel() for p in frozen.projector.parameters()),
    }


def _refit(backbone, chat, frozen, slots, settings: BenchSettings, count) -> dict:
    from lpm_local.memory.fitting import fit_slots
    from lpm_local.memory.refit import RefitSettings
    from lpm_local.memory.windows import make_windows

    app = RefitSettings()
    history = filler_history(random.Random("bench:refit"), settings.refit_history_tokens, count)
    windows = make_windows(chat, history, app.window)
    tokens = sum(count(t.content) + 5 for t in history)
    start = time.perf_counter()
    result = fit_slots(
        backbone.model,
        frozen.projector,
        slots,
        windows,
        steps=settings.refit_steps,
        lr=app.lr_for(frozen.embedding_rms),
        batch_size=app.batch_size,
    )
    _sync(backbone)
    seconds = time.perf_counter() - start
    per_step = seconds / max(result.steps_run, 1)
    return {
        "history_tokens": tokens,
        "windows": len(windows),
        "steps": result.steps_run,
        "batch_size": app.batch_size,
        "seconds": seconds,
        "seconds_per_step": per_step,
        "seconds_per_1k_history_tokens": seconds / (tokens / 1000),
        # The app's refit makes one pass over the history's windows (and as many recall
        # examples): the steps it would take for this history, and their cost.
        "app_refit_steps": app.steps_for(2 * len(windows)),
        "app_refit_seconds_estimate": per_step * app.steps_for(2 * len(windows)),
    }
