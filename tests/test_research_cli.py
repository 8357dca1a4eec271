"""`lpm train-projector` on the tiny Qwen3 (it runs end to end and writes loadable checkpoints)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lpm_local.cli import main
from lpm_local.memory.projector import Projector

FACTS = [
    "I keep bees.",
    "I live in Lyon.",
    "I play the cello.",
    "I am vegan.",
    "I like jazz.",
    "I drive a truck.",
    "I have two cats.",
    "I love hiking.",
    "I work nights.",
    "I bake bread.",
]


def _personas(path):
    def split(offset: int):
        return [
            {
                "Speaker 1": FACTS[(offset + i) % 10 :] + FACTS[: (offset + i) % 10][:2],
                "Speaker 2": FACTS[::-1],
            }
            for i in range(6)
        ]

    path.write_text(json.dumps({"train": split(0), "valid": split(3), "test": split(5)}))
    return path


def test_train_projector_writes_a_loadable_checkpoint(tiny_qwen3_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train-projector",
            "--model",
            str(tiny_qwen3_dir),
            "--personas",
            str(_personas(tmp_path / "p.json")),
            "--out",
            str(out),
            "--steps",
            "2",
            "--users-per-step",
            "2",
            "--eval-every",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2]
    assert all(record["loss"] > 0 and record["valid"]["questions"] > 0 for record in log)
    assert Projector.load(out / "projector.safetensors").config.hidden_size == 64
    best = json.loads((out / "best.json").read_text())
    assert best["valid"]["own_loss"] == min(
        r["valid"]["own_loss"] for r in log
    )  # the best step is kept
    assert Projector.load(out / "best-projector.safetensors").config.hidden_size == 64
