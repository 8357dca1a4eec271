"""`lpm bench`: the measurements' structure and arithmetic on the tiny Qwen3 (no timing asserts:
speed is measured by the benchmark itself, never by tests), real Qwen3 shapes, the command."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from transformers import Qwen3Config

from lpm_local.errors import BadInput
from lpm_local.research.eval.bench import COMMON, SHAPES, BenchSettings, random_backbone, run_bench
from lpm_local.research.eval.report import kv_bytes_for, kv_bytes_per_token

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny fits: no OpenMP oversubscription
QUICK = BenchSettings(
    lengths=(100, 800),
    new_tokens=4,
    repeats=1,
    refit_history_tokens=64,
    refit_steps=1,
    projector_repeats=2,
)


def test_bench_measures_every_figure(tiny_backbone):
    result = run_bench(tiny_backbone, QUICK)
    json.dumps(result)  # JSON-able as is
    assert result["decode"]["new_tokens"] == 4 and result["decode"]["tokens_per_s"] > 0
    short, long = result["ttft"]
    assert long["full_context_tokens"] > short["full_context_tokens"] > long["lpm_tokens"]
    assert short["lpm_tokens"] == long["lpm_tokens"]  # LPM's prompt does not grow with the history
    per_token = kv_bytes_per_token(tiny_backbone)
    assert long["full_context_kv_bytes"] == long["full_context_tokens"] * per_token
    assert all(p[k] > 0 for p in result["ttft"] for k in ("full_context_s", "lpm_s"))
    assert result["projector"]["per_turn_s"] > 0
    assert result["projector"]["params"] == 0  # the default bank routes: nothing trained in it
    assert result["projector_kind"] == "routed bank" and result["soft_tokens"] == 32
    refit = result["refit"]
    assert refit["steps"] == 1 and refit["windows"] > 0
    assert refit["seconds_per_1k_history_tokens"] == pytest.approx(
        refit["seconds"] / (refit["history_tokens"] / 1000)
    )
    memory = result["memory_bytes"]
    assert memory["peak_rss"] >= memory["rss_after_load"] > 0


def test_full_context_is_capped_by_the_window(tiny_backbone):
    from dataclasses import replace

    small = replace(tiny_backbone, context_window=150)
    result = run_bench(small, replace(QUICK, lengths=(400,)))
    assert result["ttft"][0]["full_context_tokens"] <= 150 - 16


def test_kv_bytes_of_the_real_qwen3_shapes():
    # 2 (K, V) x layers x KV heads x head_dim x 2 bytes (bf16): 4B has 36 layers, 8 KV heads.
    assert (
        kv_bytes_for(Qwen3Config(**COMMON, **SHAPES["qwen3-4b"]), torch.bfloat16)
        == 2 * 36 * 8 * 128 * 2
    )
    assert (
        kv_bytes_for(Qwen3Config(**COMMON, **SHAPES["qwen3-0.6b"]), torch.float32)
        == 2 * 28 * 8 * 128 * 4
    )


def test_random_backbone_has_the_requested_shape(tiny_backbone):
    shape = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=96,
        vocab_size=600,
    )
    backbone = random_backbone(shape, tokenizer=tiny_backbone.tokenizer, device="cpu")
    cfg = backbone.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.vocab_size) == (
        64,
        2,
        2,
        600,
    )
    assert backbone.dtype == torch.float32 and backbone.hidden_size == 64
    assert not any(p.requires_grad for p in backbone.model.parameters())
    result = run_bench(backbone, QUICK)
    assert result["backbone"] == "random:custom" and result["decode"]["new_tokens"] == 4


def test_random_backbone_refuses_unknown_shapes_and_small_vocabularies(tiny_backbone):
    with pytest.raises(BadInput, match="unknown shape"):
        random_backbone("qwen3-99b", tokenizer=tiny_backbone.tokenizer, device="cpu")
    with pytest.raises(BadInput, match="more than the vocabulary"):
        random_backbone(
            {
                "vocab_size": 100,
                "hidden_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 16,
                "intermediate_size": 64,
            },
            tokenizer=tiny_backbone.tokenizer,
            device="cpu",
        )


def _cli():
    from lpm_local.cli.base import LpmGroup
    from lpm_local.cli.bench import COMMANDS

    group = LpmGroup("lpm")
    for command in COMMANDS:
        group.add_command(command)
    return group


def test_bench_command_writes_json(tiny_qwen3_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        _cli(),
        [
            "bench",
            "-m",
            str(tiny_qwen3_dir),
            "--device",
            "cpu",
            "--quantize",
            "none",
            "--lengths",
            "32,64",
            "--new-tokens",
            "3",
            "--repeats",
            "1",
            "--refit-steps",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [p["history_tokens"] for p in data["ttft"]] == [32, 64]
    assert {"decode", "ttft", "projector", "refit", "memory_bytes", "kv_bytes_per_token"} <= set(
        data
    )


def test_bench_command_rejects_bad_options(tiny_qwen3_dir):
    runner = CliRunner()
    result = runner.invoke(
        _cli(), ["bench", "--random-weights", "qwen3-4b", "-m", str(tiny_qwen3_dir)]
    )
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(_cli(), ["bench", "--lengths", "many"])
    assert result.exit_code == 2 and "integers" in result.output
