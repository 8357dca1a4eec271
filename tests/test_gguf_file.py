"""The GGUF file llama.cpp loads (``backbones/gguf_file.py``): a multi-part backbone's parts
assembled once, verified, kept next to the converted cache, and assembled again only when the
parts change; a mismatch keeps nothing. Real part packages on ``sys.path`` (the ``site``
fixture of test_gguf_parts.py), no model weights.
"""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from lpm_local.backbones import gguf_file
from lpm_local.errors import ModelNotAvailable
from tests.test_gguf_parts import SLICES, WHOLE, _install_all, _spec, site  # noqa: F401


def test_assembled_once_verified_and_private(site, lpm_home):  # noqa: F811
    _install_all(site)
    path = gguf_file.assembled_gguf(_spec())
    assert path == gguf_file.assembled_path("fake-split") and path.read_bytes() == WHOLE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.parent == gguf_file.locations.model_cache_dir("fake-split").parent
    stamp = path.stat().st_mtime_ns
    assert gguf_file.assembled_gguf(_spec()) == path
    assert path.stat().st_mtime_ns == stamp  # kept: not assembled again
    leftovers = [p.name for p in path.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_new_parts_are_assembled_again(site, lpm_home):  # noqa: F811
    _install_all(site)
    path = gguf_file.assembled_gguf(_spec())
    changed = [SLICES[0], b"B" * 3000, SLICES[2]]
    whole = b"".join(changed)
    _install_all(site, changed)
    spec = _spec(gguf_sha256=hashlib.sha256(whole).hexdigest())
    assert gguf_file.assembled_gguf(spec) == path and path.read_bytes() == whole


def test_a_mismatch_keeps_nothing_and_the_decoder_falls_back(site, lpm_home, monkeypatch):  # noqa: F811
    _install_all(site, [SLICES[0], b"x" * 3000, SLICES[2]])
    with pytest.raises(ModelNotAvailable, match="sha256"):
        gguf_file.assembled_gguf(_spec())
    assert not gguf_file.assembled_path("fake-split").exists()
    folder = gguf_file.assembled_path("fake-split").parent
    assert [p for p in os.listdir(folder) if not p.endswith(".lock")] == []
    # Through the registry lookup the decoder uses: no file, so no llama.cpp (and no error).
    monkeypatch.setattr(gguf_file, "registry", lambda: {"fake-split": _spec()})
    assert gguf_file.gguf_file_for("fake-split") is None


def test_non_gguf_backbones_have_no_file():
    assert gguf_file.gguf_file_for("qwen3-4b") is None
    assert gguf_file.gguf_file_for("no-such-model") is None
