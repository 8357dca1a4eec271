"""Projector: shapes, prompt-tuning equivalence at init, and safe persistence (R10)."""

from __future__ import annotations

import pickle
import struct

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from lpm_local.errors import BadBundle
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.lm import token_logprobs
from lpm_local.memory.projector import Projector
from lpm_local.memory.windows import IGNORE, Window

H = 64


def tiny_config(**kw) -> MemoryConfig:
    base = dict(hidden_size=H, n_slots=4, slot_dim=H, n_soft_tokens=4, heads=2, head_dim=8)
    base.update(kw)
    return MemoryConfig(**base)


def tiny_model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen3Config(
        hidden_size=H,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        vocab_size=97,
        pad_token_id=0,
    )
    return Qwen3ForCausalLM(cfg).eval()


def windows() -> list[Window]:
    ids = [(5, 6, 7, 8, 9), (10, 11, 12)]
    return [Window(i, (IGNORE,) + i[1:], i[:2]) for i in ids]


@pytest.mark.parametrize("batched", [False, True])
def test_shapes_and_attention_rows(batched):
    cfg = tiny_config(n_slots=6, n_soft_tokens=3, identity_path=False)
    proj = Projector(cfg)
    slots = torch.randn(2, 6, H) if batched else torch.randn(6, H)
    soft, attn = proj(slots, torch.randn(2, 5, H), torch.ones(2, 5))
    assert soft.shape == (2, 3, H) and soft.dtype == torch.float32
    assert attn.shape == (2, cfg.heads, 3, 6)
    assert torch.allclose(attn.sum(-1), torch.ones(2, cfg.heads, 3))


def test_fresh_projector_is_prompt_tuning_exactly():
    proj = Projector(tiny_config())
    slots = torch.randn(4, H)
    soft, _ = proj(slots, torch.randn(3, 7, H), torch.ones(3, 7))
    assert torch.equal(soft, slots.expand(3, -1, -1))


def test_fresh_projector_gives_prompt_tuning_logits():
    model, proj = tiny_model(), Projector(tiny_config())
    slots = torch.randn(4, H) * 0.1
    ws = windows()
    soft, _ = proj(slots, torch.zeros(2, 1, H), torch.zeros(2, 1))
    with torch.no_grad():
        a = token_logprobs(model, soft, ws)
        b = token_logprobs(model, slots.expand(2, -1, -1), ws)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_memory_off_equals_bare_model():
    model, ws = tiny_model(), windows()
    with torch.no_grad():
        sums, counts = token_logprobs(model, None, ws[:1])
        logits = model(input_ids=torch.tensor([ws[0].input_ids])).logits[0]
    lp = logits.log_softmax(-1)
    ids = ws[0].input_ids
    expected = sum(lp[p - 1, ids[p]] for p in range(1, len(ids)))
    assert counts.item() == len(ids) - 1
    assert torch.allclose(sums[0], expected, atol=1e-5)


def test_trained_mix_depends_on_the_query():
    proj = Projector(tiny_config())
    with torch.no_grad():
        proj.out.weight.normal_()
        proj.query_in.weight.normal_()
    slots = torch.randn(4, H)
    a, attn_a = proj(slots, torch.randn(1, 3, H), torch.ones(1, 3))
    b, attn_b = proj(slots, torch.randn(1, 3, H), torch.ones(1, 3))
    assert not torch.allclose(a, b) and not torch.allclose(attn_a, attn_b)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    proj = Projector(tiny_config())
    with torch.no_grad():
        proj.out.weight.normal_()
    path = tmp_path / "p.safetensors"
    proj.save(path)
    again = Projector.load(path)
    assert again.config == proj.config and again.sha256() == proj.sha256()
    for (name, a), (_, b) in zip(proj.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_sha256_tracks_weights():
    proj = Projector(tiny_config())
    before = proj.sha256()
    with torch.no_grad():
        proj.slot_bias[0, 0, 0] += 1e-3
    assert proj.sha256() != before


def _blob_with(proj: Projector, name: str, value: torch.Tensor) -> bytes:
    from safetensors.torch import save

    state = {k: v.clone() for k, v in proj.state_dict().items()}
    state[name] = value
    return save(
        state, metadata={"format": "lpm-projector/1", "memory_config": proj.config.to_json()}
    )


def test_refuses_nan_weights():
    proj = Projector(tiny_config())
    bad = proj.slot_bias.detach().clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(BadBundle, match="NaN or Inf"):
        Projector.from_bytes(_blob_with(proj, "slot_bias", bad))


def test_refuses_wrong_shape_and_dtype():
    proj = Projector(tiny_config())
    with pytest.raises(BadBundle, match="shape"):
        Projector.from_bytes(_blob_with(proj, "slot_bias", torch.zeros(1, 2, 3)))
    with pytest.raises(BadBundle, match="dtype"):
        Projector.from_bytes(_blob_with(proj, "slot_bias", proj.slot_bias.detach().half()))


def test_refuses_truncated_and_lying_headers():
    blob = Projector(tiny_config()).to_bytes()
    with pytest.raises(BadBundle, match="corrupt|truncated"):
        Projector.from_bytes(blob[: len(blob) - 10])
    with pytest.raises(BadBundle, match="longer than the file"):
        Projector.from_bytes(struct.pack("<Q", len(blob)) + blob[8:])
    with pytest.raises(BadBundle, match="too large"):
        Projector.from_bytes(struct.pack("<Q", 1 << 40) + blob[8:])
    with pytest.raises(BadBundle, match="too short"):
        Projector.from_bytes(b"abc")


class _Sentinel:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_refuses_a_pickle_and_never_runs_it(tmp_path):
    sentinel = tmp_path / "pwned"
    blob = pickle.dumps(_Sentinel(str(sentinel)))
    path = tmp_path / "projector.safetensors"
    path.write_bytes(blob)
    with pytest.raises(BadBundle):
        Projector.load(path)
    assert not sentinel.exists()


def test_refuses_other_formats():
    from lpm_local.memory.slots import slots_to_bytes

    cfg = tiny_config()
    with pytest.raises(BadBundle, match="not a projector"):
        Projector.from_bytes(slots_to_bytes(torch.zeros(4, H), cfg))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_slots=0), "n_slots"),
        (dict(n_slots=3), "n_slots == n_soft_tokens"),
        (dict(slot_dim=32), "slot_dim == hidden_size"),
        (dict(heads=-1), "heads"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**kw)


def test_config_json_round_trip_and_unknown_keys():
    cfg = tiny_config()
    assert MemoryConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        MemoryConfig.from_json('{"n_slots": 4, "evil": 1}')
