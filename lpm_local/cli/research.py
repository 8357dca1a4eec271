"""`lpm train-projector`: making the shared projector.

It needs the MSC persona sentences (`msc_personas_all.json`, train/valid/test splits of
{"Speaker 1": [...], ...}); they are not shipped in the package, so the path is an argument.
Checking a projector is `lpm eval` (`-b recall` is the table of its card).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lpm_local.cli.base import stderr_progress
from lpm_local.cli.chatting import model_option

personas_option = click.option(
    "--personas",
    "personas_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="MSC persona sentences (msc_personas_all.json) to build synthetic users from.",
)


def _load(model: str | None, personas_path: Path):
    import torch

    from lpm_local.backbones.loader import load_backbone
    from lpm_local.research.synthetic import load_msc_personas

    # The memory network and refits train in fp32; on CPU the compute must stay fp32 too.
    backbone = load_backbone(
        model, quantize=None if torch.cuda.is_available() else "none", progress=stderr_progress()
    )
    return backbone, load_msc_personas(personas_path)


@click.command("train-projector")
@model_option
@personas_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint folder (resumed if it has one).",
)
@click.option("--steps", type=click.IntRange(1), default=200, show_default=True)
@click.option("--users-per-step", type=click.IntRange(1), default=4, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--eval-every",
    type=click.IntRange(1),
    default=25,
    show_default=True,
    help="Steps between validations; the best one is kept as best-projector.safetensors.",
)
def train_projector(
    model: str | None,
    personas_path: Path,
    out_dir: Path,
    steps: int,
    users_per_step: int,
    lr: float,
    seed: int,
    eval_every: int,
) -> None:
    """Train the shared projector on synthetic users.

    Runs through accelerate: `accelerate launch -m lpm_local.cli train-projector ...` uses
    several GPUs unchanged. Copy the best validated checkpoint, best-projector.safetensors, to
    lpm_local/backbones/<backbone>/projector.safetensors to ship it.
    """
    from lpm_local.memory.config import MemoryConfig
    from lpm_local.research.training import TrainConfig
    from lpm_local.research.training import train_projector as train

    backbone, personas = _load(model, personas_path)
    config = MemoryConfig(hidden_size=backbone.hidden_size, slot_dim=backbone.hidden_size)
    train_config = TrainConfig(
        steps=steps,
        users_per_step=users_per_step,
        lr=lr,
        seed=seed,
        eval_every=max(1, min(eval_every, steps)),
        checkpoint_every=max(1, min(50, steps)),
    )

    def report(record: dict) -> None:
        click.echo(json.dumps(record), err=True)

    train(backbone, backbone.tokenizer, personas, out_dir, config, train_config, progress=report)
    click.echo(f"checkpoints in {out_dir}")


COMMANDS = [train_projector]
