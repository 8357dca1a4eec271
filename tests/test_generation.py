"""``ChatEngine`` on the tiny Qwen3: R22 (no prefix = the bare model, fp32 and NF4), prefix
injection (shapes, mask, labels, dtype cast, gradient), streaming, cancellation and EOS."""

from __future__ import annotations

import copy
import dataclasses
import threading

import pytest
import torch

from lpm_local.backbones.loader import load_backbone
from lpm_local.chat.encoding import Turn
from lpm_local.chat.engine import IGNORE_INDEX, ChatEngine

QUESTION = [Turn("user", "What is the capital of France?")]


@pytest.fixture(scope="module")
def nf4_backbone(tiny_qwen3_dir):
    return load_backbone(str(tiny_qwen3_dir), quantize="nf4", device="cpu")


@pytest.fixture(params=["none", "nf4"])
def engine(request, tiny_backbone, nf4_backbone):
    return ChatEngine(tiny_backbone if request.param == "none" else nf4_backbone)


@pytest.fixture
def fp32_engine(tiny_backbone):
    return ChatEngine(tiny_backbone)


def batch_ids(engine, n=2, length=12):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 400, (n, length), generator=g)


# ---------------------------------------------------------------- R22: memory off = bare model


def test_r22_logits_equal_bare_model(engine):
    ids = batch_ids(engine)
    with torch.no_grad():
        bare = engine.backbone.model(input_ids=ids).logits
    assert torch.allclose(engine.logits(ids), bare, atol=1e-5, rtol=1e-5)


def test_r22_loss_equals_bare_model(engine):
    ids = batch_ids(engine)
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    with torch.no_grad():
        bare = engine.backbone.model(input_ids=ids, labels=labels).loss
        ours = engine.loss(ids, labels)
    assert torch.allclose(ours, bare, atol=1e-6)


def test_r22_greedy_generation_equals_bare_generate(engine):
    ids = engine.encode(QUESTION)
    bare = engine.backbone.model.generate(ids, max_new_tokens=16, do_sample=False)
    ours = engine.generate(ids, max_new_tokens=16)
    assert torch.equal(ours, bare[:, ids.shape[1] :])  # generate(inputs_embeds) returns new tokens


# ---------------------------------------------------------------- prefix injection


@pytest.mark.parametrize("shape", [(5, 64), (2, 5, 64)])
def test_prefix_shapes_and_mask(fp32_engine, shape):
    ids = batch_ids(fp32_engine)
    pad = torch.ones_like(ids)
    pad[1, -3:] = 0  # right padding in the second row
    prefix = torch.randn(*shape)
    embeds, mask = fp32_engine.embed_with_prefix(ids, prefix, attention_mask=pad)
    assert embeds.shape == (2, 5 + 12, 64) and mask.shape == (2, 17)
    assert mask[:, :5].eq(1).all() and torch.equal(mask[:, 5:], pad)
    expanded = prefix.expand(2, 5, 64) if prefix.dim() == 2 else prefix
    assert torch.equal(embeds[:, :5], expanded)
    assert torch.equal(embeds[:, 5:], fp32_engine.backbone.embed(ids))


def test_prefix_cast_once_to_embedding_dtype(tiny_backbone):
    model = copy.deepcopy(tiny_backbone.model).to(torch.bfloat16)
    engine = ChatEngine(dataclasses.replace(tiny_backbone, model=model, dtype=torch.bfloat16))
    prefix = torch.randn(3, 64, dtype=torch.float32, requires_grad=True)
    embeds, _ = engine.embed_with_prefix(torch.tensor([[1, 2]]), prefix)
    assert embeds.dtype == torch.bfloat16
    assert torch.equal(embeds[0, :3], prefix.detach().to(torch.bfloat16))
    embeds.float().sum().backward()
    assert prefix.grad is not None and prefix.grad.dtype == torch.float32


@pytest.mark.parametrize("shape", [(5, 63), (3, 5, 64), (5,)])
def test_bad_prefix_shape_rejected(fp32_engine, shape):
    with pytest.raises(ValueError, match=r"prefix must be \[M, 64\]"):
        fp32_engine.embed_with_prefix(batch_ids(fp32_engine), torch.zeros(shape))


def test_labels_with_prefix():
    labels = torch.tensor([[5, 6, -100], [7, 8, 9]])
    out = ChatEngine.labels_with_prefix(labels, 4)
    assert out.shape == (2, 7)
    assert out[:, :4].eq(IGNORE_INDEX).all() and torch.equal(out[:, 4:], labels)


def test_prefix_changes_logits_only_at_token_positions(fp32_engine):
    ids = batch_ids(fp32_engine)
    prefix = torch.randn(4, 64)
    with_prefix = fp32_engine.logits(ids, prefix)
    assert with_prefix.shape == (2, 12, fp32_engine.backbone.model.config.vocab_size)
    assert not torch.allclose(with_prefix, fp32_engine.logits(ids), atol=1e-3)


def test_gradient_flows_into_prefix_not_model(engine):
    ids = batch_ids(engine)
    prefix = (0.02 * torch.randn(4, 64)).requires_grad_(True)
    loss = engine.loss(ids, ids.clone(), prefix)
    loss.backward()
    assert prefix.grad is not None and torch.isfinite(prefix.grad).all()
    assert prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in engine.backbone.model.parameters())


def test_logits_keep_gradient_only_for_a_trainable_prefix(fp32_engine):
    ids = batch_ids(fp32_engine)
    assert not fp32_engine.logits(ids, torch.randn(2, 64)).requires_grad
    assert fp32_engine.logits(ids, torch.randn(2, 64, requires_grad=True)).requires_grad


# ---------------------------------------------------------------- streaming


def test_stream_yields_the_greedy_reply(fp32_engine):
    chunks = list(fp32_engine.stream(QUESTION, max_new_tokens=24))
    ids = fp32_engine.generate(fp32_engine.encode(QUESTION), max_new_tokens=24)
    tok = fp32_engine.backbone.tokenizer
    assert "".join(chunks) == tok.decode(ids[0], skip_special_tokens=True)
    assert len(chunks) > 1  # streamed in pieces, not at the end
    stats = fp32_engine.last_stats
    assert stats.new_tokens == 24 and stats.prompt_tokens == fp32_engine.encode(QUESTION).shape[1]
    assert 0 < stats.time_to_first_token <= stats.total_time and not stats.cancelled
    assert stats.decode_tokens_per_s > 0


def test_stream_with_prefix_differs_from_without(fp32_engine):
    torch.manual_seed(3)
    prefix = torch.randn(4, 64) * 3
    plain = "".join(fp32_engine.stream(QUESTION, max_new_tokens=12))
    shaped = "".join(fp32_engine.stream(QUESTION, prefix=prefix, max_new_tokens=12))
    assert fp32_engine.last_stats.prefix_tokens == 4
    assert plain != shaped


def test_cancel_stops_within_a_token(fp32_engine):
    cancel = threading.Event()
    seen_at_cancel = None
    received = []
    for chunk in fp32_engine.stream(QUESTION, cancel=cancel, max_new_tokens=300):
        received.append(chunk)
        seen_at_cancel = fp32_engine.last_stats.new_tokens
        cancel.set()
    stats = fp32_engine.last_stats
    assert len(received) == 1 and stats.cancelled
    # The token being computed when cancel was set may still finish; nothing after it.
    assert stats.new_tokens <= seen_at_cancel + 2 < 300


def test_cancel_before_start_generates_at_most_one_token(fp32_engine):
    cancel = threading.Event()
    cancel.set()
    assert list(fp32_engine.stream(QUESTION, cancel=cancel, max_new_tokens=100)) == []
    assert fp32_engine.last_stats.new_tokens <= 1


def test_closing_the_stream_stops_the_worker(fp32_engine):
    stream = fp32_engine.stream(QUESTION, max_new_tokens=300)
    next(stream)
    stream.close()
    assert fp32_engine.last_stats.new_tokens < 300
    assert not any(t.name == "lpm-generate" and t.is_alive() for t in threading.enumerate())


@pytest.fixture
def lm_head_hook(tiny_backbone):
    """Install a forward hook on the shared model's lm_head for one test, then remove it."""
    handles = []

    def install(fn):
        handles.append(tiny_backbone.model.lm_head.register_forward_hook(fn))

    yield install
    for handle in handles:
        handle.remove()


def test_stream_stops_at_im_end(fp32_engine, lm_head_hook):
    im_end = fp32_engine.backbone.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in fp32_engine.eos_token_ids
    calls = []

    def force_eos_on_third_token(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            output = output.clone()
            output[:, -1, im_end] = 1e4
            return output

    lm_head_hook(force_eos_on_third_token)
    text = "".join(fp32_engine.stream(QUESTION, max_new_tokens=50))
    assert fp32_engine.last_stats.new_tokens == 3
    assert "<|im_end|>" not in text


def test_worker_error_reaches_the_consumer(fp32_engine, lm_head_hook):
    calls = []

    def fail_on_fourth_step(module, args, output):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("out of memory (simulated)")

    lm_head_hook(fail_on_fourth_step)
    with pytest.raises(RuntimeError, match="simulated"):
        for _ in fp32_engine.stream(QUESTION, max_new_tokens=50):
            pass


def test_sampling_is_reproducible_with_a_seed(fp32_engine):
    kwargs = dict(max_new_tokens=16, temperature=1.0, top_p=0.9)
    a = "".join(fp32_engine.stream(QUESTION, seed=7, **kwargs))
    b = "".join(fp32_engine.stream(QUESTION, seed=7, **kwargs))
    greedy = "".join(fp32_engine.stream(QUESTION, max_new_tokens=16))
    assert a == b and a != greedy


@pytest.mark.parametrize(
    "kwargs", [dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0)]
)
def test_bad_generation_settings(fp32_engine, kwargs):
    with pytest.raises(ValueError):
        fp32_engine.generate(fp32_engine.encode(QUESTION), **kwargs)


def test_stream_rejects_a_bad_prefix_before_generating(fp32_engine):
    with pytest.raises(ValueError, match=r"prefix must be \[M, 64\]"):
        next(fp32_engine.stream(QUESTION, prefix=torch.zeros(4, 63)))
