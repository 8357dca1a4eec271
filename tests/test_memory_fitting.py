"""Slots storage (a bit-exact round trip, damaged blobs refused), history windows (message text
never becomes a turn boundary) and the refit core ``fit_slots`` (its input slots never change)."""

from __future__ import annotations

import json
import pickle
import struct
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from lpm_local.chat.encoding import ChatFormat
from lpm_local.errors import BadBundle
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.fitting import evaluate_loss, fit_slots
from lpm_local.memory.projector import Projector
from lpm_local.memory.safetensors_header import tensor_shapes, zero_rows
from lpm_local.memory.slots import (
    init_slots,
    memory_from_bytes,
    slots_from_bytes,
    slots_to_bytes,
)
from lpm_local.memory.windows import (
    IGNORE,
    Window,
    WindowConfig,
    history_tokens,
    make_windows,
    qa_window,
    split_heldout,
)

H = 64
VOCAB = [
    "<pad>",
    "<|im_start|>",
    "<|im_end|>",
    "user",
    "assistant",
    "system",
    "\n",
    "i",
    "like",
    "tea",
    "jazz",
    "noted",
    "!",
    ".",
    "what",
    "do",
    "you",
    "remember",
    "?",
    "<unk>",
]


def tiny_config(**kw) -> MemoryConfig:
    base = dict(hidden_size=H, n_slots=4, slot_dim=H, n_soft_tokens=4, heads=2, head_dim=8)
    return MemoryConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = Qwen3Config(
        hidden_size=H,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        vocab_size=len(VOCAB),
        pad_token_id=0,
    )
    m = Qwen3ForCausalLM(cfg).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# Plain ChatML, as SmolLM2 and Qwen2.5 render it (a space after each role keeps the word-level
# tokenizer's words apart; the encoder never assumes anything about the template's text).
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }} \n{{ m.content }}<|im_end|> \n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant \n{% endif %}"
)


# A system prompt in the word-level vocabulary (any other word would be <unk>, a control token).
SYSTEM = "i like tea ."


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    return fast


# -- slots storage -------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 16),
    d=st.integers(1, 64),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 1000),
)
def test_slots_round_trip_bit_exact(n, d, dtype, seed):
    cfg = MemoryConfig(hidden_size=d, n_slots=n, slot_dim=d, n_soft_tokens=n, heads=1, head_dim=4)
    slots = (torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3).to(dtype)
    back, cfg2 = slots_from_bytes(slots_to_bytes(slots, cfg))
    assert cfg2 == cfg and back.dtype == dtype
    assert torch.equal(
        back.view(torch.uint8) if dtype == torch.bfloat16 else back,
        slots.view(torch.uint8) if dtype == torch.bfloat16 else slots,
    )


def _raw(tensor, cfg, **meta):
    return save(
        {"slots": tensor},
        metadata={"format": "lpm-slots/1", "memory_config": cfg.to_json(), **meta},
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((4, H), float("nan")), "NaN or Inf"),
        (torch.full((4, H), float("inf")), "NaN or Inf"),
        (torch.zeros(3, H), "shape"),
        (torch.zeros(4, H, dtype=torch.int32), "dtype"),
        (torch.zeros(4, H, dtype=torch.float64), "dtype"),
    ],
)
def test_slots_refuse_bad_tensors(bad, match):
    with pytest.raises(BadBundle, match=match):
        slots_from_bytes(_raw(bad, tiny_config()))


def test_slots_refuse_truncated_pickle_and_garbage(tmp_path):
    blob = slots_to_bytes(torch.zeros(4, H), tiny_config())
    for cut in (4, 9, len(blob) // 2, len(blob) - 1):
        with pytest.raises(BadBundle):
            slots_from_bytes(blob[:cut])
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(eval_sentinel(str(sentinel)))
    with pytest.raises(BadBundle):
        slots_from_bytes(payload)
    assert not sentinel.exists()
    with pytest.raises(BadBundle, match="memory config"):
        slots_from_bytes(
            save(
                {"slots": torch.zeros(4, H)},
                metadata={
                    "format": "lpm-slots/1",
                    "memory_config": tiny_config()
                    .to_json()
                    .replace('"n_slots": 4', '"n_slots": 0'),
                },
            )
        )
    with pytest.raises(BadBundle, match="expected tensor 'slots'"):
        slots_from_bytes(
            save(
                {"slots": torch.zeros(4, H), "x": torch.zeros(1)},
                metadata={"format": "lpm-slots/1", "memory_config": tiny_config().to_json()},
            )
        )


class eval_sentinel:  # noqa: N801 - a pickle payload that would create a file when loaded
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_low_rank_change_travels_with_its_slots_and_is_checked():
    cfg, gen = tiny_config(), torch.Generator().manual_seed(1)
    slots, a, b = torch.randn(4, H, generator=gen), torch.randn(4, 2), torch.randn(2, H)
    blob = slots_to_bytes(slots, cfg, change=(a, b))
    back, _ = slots_from_bytes(blob)
    got_a, got_b = memory_from_bytes(blob)[2]
    assert torch.equal(back, slots) and torch.equal(got_a, a) and torch.equal(got_b, b)
    assert memory_from_bytes(slots_to_bytes(slots, cfg))[2] is None  # a flat memory has none
    meta = {"format": "lpm-slots/1", "memory_config": cfg.to_json()}
    bad = [
        ({"change_a": a, "change_b": torch.randn(3, H)}, "change_b.*shape"),  # ranks differ
        ({"change_a": torch.randn(5, 2), "change_b": b}, "shape"),  # not one row per slot
        ({"change_a": a, "change_b": torch.full((2, H), float("nan"))}, "NaN"),
        ({"change_a": a}, "expected tensor 'slots'"),  # half a change
        ({"change_a": torch.randn(4, 0), "change_b": torch.randn(0, H)}, "shape"),  # rank 0
    ]
    for tensors, match in bad:
        with pytest.raises(BadBundle, match=match):
            slots_from_bytes(save({"slots": slots, **tensors}, metadata=meta))
        with pytest.raises(BadBundle, match=match):
            memory_from_bytes(save({"slots": slots, **tensors}, metadata=meta))[2]


def test_a_blobs_shapes_are_read_from_its_header_alone():
    blob = slots_to_bytes(
        torch.zeros(4, H), tiny_config(), change=(torch.zeros(4, 2), torch.zeros(2, H))
    )
    assert tensor_shapes(blob, where="t") == {
        "slots": (4, H),
        "change_a": (4, 2),
        "change_b": (2, H),
    }
    header = json.dumps({"slots": {"dtype": "F32", "shape": [4, "x"], "data_offsets": [0, 0]}})
    bad = struct.pack("<Q", len(header)) + header.encode()
    with pytest.raises(BadBundle, match="no valid shape"):
        tensor_shapes(bad, where="t")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_which_rows_are_all_zero_is_read_without_torch(dtype):
    slots = torch.randn(4, H).to(dtype)
    slots[1] = 0.0
    slots[3, 5:] = 0.0  # partly zero is not empty
    blob = slots_to_bytes(slots, tiny_config())
    assert zero_rows(blob, "slots", range(4), where="t") == [False, True, False, False]
    with pytest.raises(BadBundle, match="outside"):
        zero_rows(blob, "slots", [4], where="t")
    with pytest.raises(BadBundle, match="no 2-D tensor"):
        zero_rows(blob, "keys", [0], where="t")
    for offsets in ([0, 10**9], [8, 4], [0, 3], "x"):  # past the end, backwards, uneven, no list
        header = json.dumps({"slots": {"dtype": "F32", "shape": [2, 2], "data_offsets": offsets}})
        bad = struct.pack("<Q", len(header)) + header.encode() + bytes(16)
        with pytest.raises(BadBundle, match="bad data offsets"):
            zero_rows(bad, "slots", [0], where="t")


def test_slots_to_bytes_refuses_what_it_could_not_read():
    with pytest.raises(BadBundle, match="NaN"):
        slots_to_bytes(torch.full((4, H), float("nan")), tiny_config())


def test_init_slots_from_vocabulary_rows(model):
    emb = model.get_input_embeddings().weight
    slots = init_slots(tiny_config(), emb, seed=3)
    assert slots.shape == (4, H)
    assert all(any(torch.equal(row, e) for e in emb) for row in slots)
    assert torch.equal(slots, init_slots(tiny_config(), emb, seed=3))


# -- windows --------------------------------------------------------------------------------

HISTORY = [
    ("user", "i like tea ."),
    ("assistant", "noted !"),
    ("user", "i like jazz ."),
    ("assistant", "noted !"),
]


def test_windows_label_targets_only(tokenizer):
    chat = ChatFormat(tokenizer, SYSTEM)
    ws = make_windows(chat, HISTORY, WindowConfig(context_turns=2, target_turns=2))
    assert len(ws) == 2
    second = ws[1]
    labelled = [t for t in second.labels if t != IGNORE]
    assert tokenizer.decode(labelled).split() == [
        "i",
        "like",
        "jazz",
        ".",
        "<|im_end|>",
        "noted",
        "!",
        "<|im_end|>",
    ]
    assert tokenizer.decode(second.query_ids).split() == [
        "i",
        "like",
        "tea",
        ".",
    ]  # context, not target
    assert ws[0].query_ids == ()


def test_window_budget_drops_oldest_context(tokenizer):
    chat = ChatFormat(tokenizer, system_prompt=None)
    roomy = make_windows(chat, HISTORY, WindowConfig(context_turns=2, target_turns=2))
    tight = make_windows(
        chat, HISTORY, WindowConfig(context_turns=2, target_turns=2, max_tokens=22)
    )
    assert all(len(w.input_ids) <= 22 for w in tight)
    # The second window's context (the first exchange) did not fit and went; its targets stayed.
    assert len(tight[1].input_ids) < len(roomy[1].input_ids)
    assert tight[1].n_targets == roomy[1].n_targets > 0


def test_qa_window_labels_only_the_answer(tokenizer):
    w = qa_window(ChatFormat(tokenizer, SYSTEM), "what do you remember ?", "you", "i like tea .")
    assert tokenizer.decode([t for t in w.labels if t != IGNORE]).split() == [
        "i",
        "like",
        "tea",
        ".",
    ]


def test_history_tokens_and_split(tokenizer):
    ids, roles = history_tokens(tokenizer, HISTORY, max_tokens=5)
    assert len(ids) == 5 and roles[-1] == 1
    ws = [Window((1, 2), (IGNORE, 2)) for _ in range(10)]
    train, held = split_heldout(ws, 0.2, seed=1)
    assert len(train) == 8 and len(held) == 2
    assert split_heldout(ws, 0.2, seed=1) == (train, held)


# -- fitting --------------------------------------------------------------------------------


def _windows(target: int) -> list[Window]:
    return [Window((7, 8, target, 2), (IGNORE, IGNORE, target, 2), (7, 8))]


def test_fit_moves_only_the_slots_and_lowers_loss(model):
    proj = Projector(tiny_config())
    with torch.no_grad():
        proj.out.weight.normal_(std=0.1)
    proj_state = {k: v.clone() for k, v in proj.state_dict().items()}
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    init = torch.randn(4, H) * 0.1
    init_copy = init.clone()
    train = _windows(9)
    result = fit_slots(model, proj, init, train, steps=15, lr=0.05)
    assert torch.equal(init, init_copy)  # the caller's version is never mutated
    assert all(torch.equal(v, proj_state[k]) for k, v in proj.state_dict().items())
    assert all(torch.equal(v, model_state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in proj.parameters())
    assert not torch.equal(result.slots, init)
    assert result.train_losses[-1] < result.train_losses[0]
    assert evaluate_loss(model, proj, result.slots, train) < evaluate_loss(model, proj, init, train)
    assert result.steps_run == 15 and result.stopped == "steps"


def test_fit_as_prompt_tuning_without_projector(model):
    result = fit_slots(model, None, torch.randn(4, H) * 0.1, _windows(9), steps=10, lr=0.05)
    assert result.train_losses[-1] < result.train_losses[0]


def test_early_stopping_returns_best_slots(model):
    # Held-out windows want a different token after the same context: fitting the train target
    # makes them worse, so the fit stops early and returns the slots it started from.
    init = torch.randn(4, H) * 0.1
    result = fit_slots(
        model,
        Projector(tiny_config()),
        init,
        _windows(9),
        _windows(10),
        steps=50,
        lr=0.1,
        eval_every=1,
        patience=2,
    )
    assert result.stopped == "early" and result.steps_run < 50
    assert result.heldout_loss_after <= result.heldout_loss_before
    if result.best_step == 0:
        assert torch.equal(result.slots, init) and not result.improved


def test_fit_is_cancellable_and_reports_progress(model):
    cancel, seen = threading.Event(), []

    def progress(p):
        seen.append(p.step)
        if p.step == 3:
            cancel.set()

    result = fit_slots(
        model,
        Projector(tiny_config()),
        torch.randn(4, H) * 0.1,
        _windows(9),
        _windows(9),
        steps=40,
        lr=0.01,
        eval_every=2,
        patience=100,
        cancel=cancel,
        progress=progress,
    )
    assert result.stopped == "cancelled" and result.steps_run == 3 and seen == [1, 2, 3]
    assert result.heldout_history[0][0] == 0 and result.heldout_loss_before is not None


def test_a_low_rank_fit_learns_a_change_of_that_rank_and_goes_on_from_it(model):
    proj = Projector(tiny_config())
    with torch.no_grad():
        proj.out.weight.normal_(std=0.1)
    init = torch.randn(4, H) * 0.1
    init_copy = init.clone()
    train = _windows(9)
    first = fit_slots(model, proj, init, train, train, steps=10, lr=0.05, rank=2)
    assert torch.equal(init, init_copy)
    a, b = first.change
    assert a.shape == (4, 2) and b.shape == (2, H)
    assert torch.allclose(first.slots, init + a @ b, atol=1e-6)  # the slots are start + A @ B
    assert torch.linalg.matrix_rank(first.slots - init).item() <= 2
    assert first.improved and first.train_losses[-1] < first.train_losses[0]
    # Going on from the change starts where the first fit ended, and keeps its rank.
    second = fit_slots(model, proj, init, train, train, steps=4, lr=0.05, change=first.change)
    assert second.heldout_loss_before == pytest.approx(first.heldout_loss_after, abs=1e-5)
    assert second.change[0].shape == (4, 2)
    assert torch.linalg.matrix_rank(second.slots - init).item() <= 2
    with pytest.raises(ValueError, match="does not fit"):
        fit_slots(model, proj, init, train, steps=1, change=(torch.zeros(3, 2), b))


@pytest.mark.parametrize(
    "kw", [dict(steps=-1), dict(lr=0.0), dict(batch_size=0), dict(rank=0), dict(rank=5)]
)
def test_fit_refuses_bad_settings(model, kw):
    with pytest.raises(ValueError):
        fit_slots(model, None, torch.zeros(4, H), _windows(9), **kw)
