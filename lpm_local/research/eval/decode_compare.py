"""The decode paths side by side: transformers, llama.cpp fed our soft prompt, llama.cpp itself.

``lpm bench`` calls ``compare_decoders`` for a GGUF-sourced backbone: the same chat prompt is
answered ``rounds`` times by each path, the paths interleaved round by round so that a change in
the machine's load (other processes share it) hits all of them alike. The two LPM paths carry
the soft prompt in front (fresh slots through the projector, as a first chat would); ours
through llama.cpp runs twice, with the prompt prefilled by PyTorch and its KV cache handed over
(what replies do, ``chat/llama_kv.py``) and with llama.cpp prefilling the embeddings itself (the
fallback, and the path before the handoff); llama.cpp
itself (``llama_cpp.Llama``, the high-level API on the same GGUF file) gets the bare prompt, as a
user of llama.cpp would run it. Reported: decode tokens/s (after the first token), prefill
tokens/s (prompt and prefix positions over the time to the first token), time to first token,
the resident memory each path added when it was loaded, and the ratios to llama.cpp.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from lpm_local.chat.encoding import Turn

Progress = Callable[[str, "float | None"], None]
PROMPT = "Tell me a long story about a lighthouse keeper and a storm."
REFERENCE = "llama.cpp"
OWN_PREFILL = "lpm+llama.cpp, llama.cpp prefill"
PATHS = ("transformers", "lpm+llama.cpp", OWN_PREFILL, REFERENCE)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def compare_decoders(
    backbone,
    frozen,
    slots: torch.Tensor,
    *,
    rounds: int = 3,
    new_tokens: int = 64,
    progress: Progress | None = None,
) -> dict:
    """Interleaved rounds of the three paths on ``backbone``; a JSON-able dict, or one with a
    ``skipped`` reason when llama.cpp cannot run this backbone here."""
    from lpm_local.chat.engine import ChatEngine
    from lpm_local.chat.llama_decoder import LlamaDecoder, gguf_file_for, llama_cpp_available

    say = progress or (lambda stage, fraction=None: None)
    if not llama_cpp_available():
        return {"skipped": "llama-cpp-python is not installed (pip install 'lpm-local[fast]')"}
    path = gguf_file_for(backbone.name)
    if path is None:
        return {"skipped": f"{backbone.name} is not a GGUF backbone: llama.cpp has no file to run"}
    if backbone.device.type != "cpu":
        return {"skipped": "the llama.cpp path is built for the CPU; this backbone is on CUDA"}
    import llama_cpp

    turns = [Turn("user", PROMPT)]
    reference_engine = ChatEngine(backbone)
    ids = reference_engine.encode(turns)
    soft, _ = frozen.soft(slots, PROMPT)
    loaded: dict[str, int] = {}
    before = _rss()
    decoder = LlamaDecoder(path, hidden_size=backbone.hidden_size, prefill_backbone=backbone)
    fast_engine = ChatEngine(backbone, decoder=decoder)
    loaded["lpm+llama.cpp"] = _rss() - before
    own = LlamaDecoder(path, hidden_size=backbone.hidden_size, threads=decoder.threads)
    own_engine = ChatEngine(backbone, decoder=own)
    before = _rss()
    # n_threads_batch too: its default is every core, and prefill threads that spin against
    # other processes' work made llama.cpp's own prefill 3-20x slower than ours on this machine.
    plain = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=2048,
        n_threads=decoder.threads,
        n_threads_batch=decoder.threads,
        verbose=False,
    )
    loaded[REFERENCE] = _rss() - before
    eos = set(reference_engine.eos_token_ids)
    prompt_ids = ids[0].tolist()

    def lpm_run(engine: ChatEngine) -> dict:
        for _ in engine.stream(turns, prefix=soft, max_new_tokens=new_tokens):
            pass
        stats = engine.last_stats
        return _figures(
            stats.prompt_tokens + stats.prefix_tokens,
            stats.new_tokens,
            stats.time_to_first_token,
            stats.total_time,
        )

    def llama_run() -> dict:
        # Forget the previous round's prompt: ``generate`` keeps the longest cached prefix of
        # the same prompt, and then only the last token is prefilled (a "time to first token"
        # of one decode step, 0.19 s against our 4.0 s for the full prompt in the first bench).
        plain.reset()
        started = time.perf_counter()
        first, count = None, 0
        for token in plain.generate(prompt_ids, top_k=1, temp=0.0, reset=True):
            if first is None:
                first = time.perf_counter() - started
            if token in eos:
                break
            count += 1
            if count >= new_tokens:
                break
        return _figures(len(prompt_ids), count, first, time.perf_counter() - started)

    runs = {
        "transformers": lambda: lpm_run(reference_engine),
        "lpm+llama.cpp": lambda: lpm_run(fast_engine),
        OWN_PREFILL: lambda: lpm_run(own_engine),
        REFERENCE: llama_run,
    }
    for run in runs.values():  # warm-up: first calls pay for allocations and page faults
        run()
    samples: dict[str, list[dict]] = {name: [] for name in PATHS}
    for r in range(rounds):
        say(f"decode paths, round {r + 1}/{rounds}", r / rounds)
        for name in PATHS:
            samples[name].append(runs[name]())
    decoder.close()
    own.close()
    plain.close()
    paths = {name: _summary(samples[name], loaded.get(name)) for name in PATHS}
    base = paths[REFERENCE]["decode_tokens_per_s"]["median"]
    return {
        "gguf_file": path.name,
        "threads": decoder.threads,
        "prompt_tokens": len(prompt_ids),
        "soft_tokens": int(soft.shape[-2]),
        "new_tokens": new_tokens,
        "rounds": rounds,
        "paths": paths,
        "decode_ratio_to_llama_cpp": {
            name: (paths[name]["decode_tokens_per_s"]["median"] / base) if base else None
            for name in PATHS
        },
    }


def _figures(positions: int, new: int, ttft: float | None, total: float) -> dict:
    decode = (new - 1) / (total - ttft) if ttft is not None and new > 1 and total > ttft else None
    return {
        "new_tokens": new,
        "ttft_s": ttft,
        "decode_tokens_per_s": decode,
        "prefill_tokens_per_s": positions / ttft if ttft else None,
    }


def _summary(runs: list[dict], loaded_bytes: int | None) -> dict:
    def spread(key: str) -> dict:
        values = [r[key] for r in runs if r[key] is not None]
        if not values:
            return {"median": None, "min": None, "max": None}
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "decode_tokens_per_s": spread("decode_tokens_per_s"),
        "prefill_tokens_per_s": spread("prefill_tokens_per_s"),
        "ttft_s": spread("ttft_s"),
        "new_tokens": [r["new_tokens"] for r in runs],
        "rss_added_at_load_bytes": loaded_bytes,
    }
