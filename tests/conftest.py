"""Shared fixtures: every test runs against its own private LPM_HOME."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def lpm_home(tmp_path, monkeypatch):
    """Point every path of the app at a fresh temp dir, so no test touches real user data."""
    home = tmp_path / "lpm-home"
    monkeypatch.setenv("LPM_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory):
    """A tiny random Qwen3 + real BPE tokenizer with Qwen3's chat template, saved like a hub
    snapshot (see tests/tiny_qwen3.py). Read-only for tests: copy it before changing files."""
    from tiny_qwen3 import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def tiny_backbone(tiny_qwen3_dir):
    """The tiny Qwen3 loaded unquantized on CPU through ``load_backbone`` (frozen; shared, so
    tests must not change its weights, and must remove any hook they add)."""
    from lpm_local.backbones.loader import load_backbone

    return load_backbone(str(tiny_qwen3_dir), quantize="none", device="cpu")


@pytest.fixture
def one_torch_thread():
    """On a shared 2-core machine OpenMP oversubscription slows tiny fits ~20x; memory tests
    opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def store():
    """The app's store in this test's LPM_HOME."""
    from lpm_local.storage.store import Store

    with Store.open() as opened:
        yield opened


@pytest.fixture
def frozen(tiny_backbone):
    """The frozen memory network (identity projector) for the tiny Qwen3."""
    from lpm_local.memory.frozen import load_frozen_memory

    return load_frozen_memory(tiny_backbone)
