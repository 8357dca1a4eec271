"""`lpm bench`: the speed figures (decode, time to first token against history length, projector
overhead, refit time, peak memory), as JSON on stdout or in a file.

Thin: options become ``BenchSettings``, ``research/eval/bench.py`` measures.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lpm_local.cli.base import finish_progress_line, load_with_progress, stderr_progress

SHAPE_NAMES = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b")


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint=name
        ) from None
    if not values:
        raise click.BadParameter("give at least one value", param_hint=name)
    return values


@click.command()
@click.option(
    "--model", "-m", default=None, help="Backbone name (`lpm models`) or a local model directory."
)
@click.option("--quantize", type=click.Choice(["nf4", "none"]), default=None)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if present).")
@click.option(
    "--random-weights",
    type=click.Choice(SHAPE_NAMES),
    default=None,
    help="Measure a random-weight Qwen3 of this real shape instead of loading weights.",
)
@click.option(
    "--tokenizer",
    type=click.Path(file_okay=False),
    default=None,
    help="Tokenizer for --random-weights (default: the embedded SmolLM2's).",
)
@click.option(
    "--lengths",
    default="256,1024,4096",
    show_default=True,
    help="History lengths for the TTFT curve.",
)
@click.option("--new-tokens", default=32, show_default=True, help="Tokens decoded for tokens/s.")
@click.option("--repeats", default=3, show_default=True, help="Runs per TTFT point (median).")
@click.option("--refit-steps", default=5, show_default=True, help="fit_slots steps timed.")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the JSON here (default: stdout).",
)
def bench(
    model,
    quantize,
    device,
    random_weights,
    tokenizer,
    lengths,
    new_tokens,
    repeats,
    refit_steps,
    out_file,
) -> None:
    """Measure decode speed, time to first token vs history length (LPM vs full context),
    projector overhead, refit time and peak memory on this machine; JSON out."""
    from lpm_local.research.eval.bench import (
        BenchSettings,
        borrowed_tokenizer,
        random_backbone,
        run_bench,
    )

    try:
        settings = BenchSettings(
            lengths=_ints(lengths, "--lengths"),
            new_tokens=new_tokens,
            repeats=repeats,
            refit_steps=refit_steps,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if random_weights:
        if model:
            raise click.UsageError("give --model or --random-weights, not both")
        stderr_progress("bench: ")(f"building a random-weight {random_weights}", None)
        backbone = random_backbone(
            random_weights, tokenizer=borrowed_tokenizer(tokenizer), device=device
        )
    else:
        backbone = load_with_progress(model, quantize, device, "bench: ")
    result = run_bench(backbone, settings, progress=stderr_progress("bench: "))
    finish_progress_line()
    text = json.dumps(result, indent=1)
    if out_file:
        Path(out_file).write_text(text + "\n", encoding="utf-8")
        click.echo(f"bench results: {out_file}")
    else:
        click.echo(text)


COMMANDS = [bench]
