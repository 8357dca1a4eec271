"""``run_eval``: every method on every benchmark, same backbone, same data, same budget.

For each case the questions are grouped by their point in time (cutoff). For each group each
method is fitted on ``case.history(cutoff)`` only (the turns before the question), then scores
the group's options; LoRA's adapter is attached around its group and removed after. Per question
the runner records the option scores, the prediction, the tokens in the KV cache and, when
``generate`` is on (the default), a greedy reply to the question asked free-form: for the
multiple-choice benchmarks (PersonaMem-style, recall) whether it names the right option and no
wrong one (``mentions.py``), for LoCoMo its token F1. Per fit: the wall time, per-user trainable
numbers and time to first token on the group's first question(s). ``report.py`` turns the
records into Markdown, JSON and a plot.

With an output folder every record is appended to ``eval-checkpoint.jsonl`` as it lands
(``checkpoint.py``): a rerun with the same settings skips what is done, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from lpm_local.research.eval import report
from lpm_local.research.eval.cases import (
    Benchmark,
    EvalCase,
    EvalQuestion,
    history_token_count,
    token_counter,
)
from lpm_local.research.eval.checkpoint import FILENAME, Checkpoint, digest, group_key
from lpm_local.research.eval.locomo import GENERATION_SUFFIX, LocomoConfig, load_locomo, locomo_f1
from lpm_local.research.eval.mentions import mentioned
from lpm_local.research.eval.methods import FITTED, BackboneMethod, MethodSettings, build_method
from lpm_local.research.eval.personamem import PersonaMemConfig, build_personamem
from lpm_local.research.eval.recall import RecallConfig, build_recall
from lpm_local.research.eval.tuning import tune_learning_rates

Progress = Callable[[str, "float | None"], None]
BENCHMARKS = ("personamem", "locomo", "recall")


@dataclass(frozen=True)
class EvalConfig:
    personamem: PersonaMemConfig = field(default_factory=PersonaMemConfig)
    locomo: LocomoConfig = field(default_factory=LocomoConfig)
    recall: RecallConfig = field(default_factory=RecallConfig)
    methods: MethodSettings = field(default_factory=MethodSettings)
    personas_path: str | None = None  # MSC personas (msc_personas_all.json)
    locomo_path: str | None = None  # a file of locomo10.json's schema
    # A greedy reply per question and method (generative accuracy, LoCoMo token F1): about as
    # slow as scoring the options; off, only option log-likelihoods are measured.
    generate: bool = True
    max_new_tokens: int = 32
    # Questions per (case, cutoff, method) timed for time to first token (a fresh prefill each).
    ttft_samples: int = 1
    # A learning-rate grid: each fitted method takes its best rate on validation users.
    lr_grid: tuple[float, ...] = ()
    tune_users: int = 2

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.ttft_samples < 0 or self.tune_users < 1:
            raise ValueError(
                f"bad eval config: max_new_tokens={self.max_new_tokens}, "
                f"ttft_samples={self.ttft_samples}, tune_users={self.tune_users}"
            )


class Cancelled(Exception):
    """The cancel event was set; the records so far are still reported."""


def build_benchmark(name: str, backbone, config: EvalConfig, *, users: int, seed: int) -> Benchmark:
    """A benchmark by name, sized for this backbone's tokenizer."""
    from lpm_local.research.eval import data

    count = token_counter(backbone)
    if name == "personamem":
        personas = data.personas(config.personas_path)
        return build_personamem(personas, replace(config.personamem, users=users, seed=seed), count)
    if name == "locomo":
        return load_locomo(
            data.locomo_file(config.locomo_path), replace(config.locomo, seed=seed), count
        )
    if name == "recall":
        personas = data.personas(config.personas_path)
        return build_recall(personas, replace(config.recall, users=users, seed=seed), count)
    from lpm_local.errors import BadInput

    raise BadInput(f"unknown benchmark {name!r}", hint=f"choose from {', '.join(BENCHMARKS)}")


def run_eval(
    backbone,
    benchmarks: Sequence[str | Benchmark],
    methods: Sequence[str | BackboneMethod],
    *,
    users: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
    out_dir: str | Path | None = None,
    config: EvalConfig | None = None,
    cancel: threading.Event | None = None,
    fresh: bool = False,
) -> dict:
    """Evaluate ``methods`` on ``benchmarks``; returns the report dict (written to ``out_dir``
    as ``eval.md``, ``eval.json`` and ``eval.png`` when given).

    With ``out_dir``, results already in its checkpoint for the same settings are reused
    (``fresh`` discards them first); a checkpoint of other settings is refused (``BadInput``)."""
    config = config or EvalConfig()
    report_progress = progress or (lambda stage, fraction=None: None)
    started = time.time()
    settings = replace(config.methods, seed=seed)
    names = [m if isinstance(m, str) else m.name for m in methods]
    benches = [
        build_benchmark(b, backbone, config, users=users, seed=seed) if isinstance(b, str) else b
        for b in benchmarks
    ]
    checkpoint = Checkpoint(
        None if out_dir is None else Path(out_dir) / FILENAME,
        _settings(backbone, benches, names, config, users, seed),
        fresh=fresh,
    )
    tuning = checkpoint.tuning
    if tuning is None and config.lr_grid and any(n in FITTED for n in names):
        tuning = tune_learning_rates(
            backbone,
            [n for n in names if n in FITTED],
            settings,
            config,
            seed=seed,
            progress=report_progress,
        )
        checkpoint.keep_tuning(tuning)
    if tuning is not None:
        settings = replace(settings, lrs=tuple(tuning["chosen"].items()))
    built = [build_method(m, backbone, settings) if isinstance(m, str) else m for m in methods]
    checkpoint.check_methods([m.describe() for m in built])
    count = token_counter(backbone)
    units = sum(len(c.by_cutoff()) for b in benches for c in b.cases) * len(built)
    records: list[dict] = []
    fits: list[dict] = []
    done, cancelled = 0, False
    try:
        for bench in benches:
            for case in bench.cases:
                for cutoff, questions in case.by_cutoff():
                    history_tokens = history_token_count(case.history(cutoff), count)
                    for method in built:
                        _check(cancel)
                        report_progress(
                            f"{bench.name} {case.case_id} @{cutoff}: {method.name}",
                            done / max(units, 1),
                        )
                        tag = {
                            "benchmark": bench.name,
                            "case": case.case_id,
                            "length": case.length_label,
                            "cutoff": cutoff,
                            "history_tokens": history_tokens,
                            "method": method.name,
                        }
                        group = _Group(method, bench, case, cutoff, questions, tag)
                        fits.append(_run_group(group, config, cancel, checkpoint, records))
                        done += 1
    except Cancelled:
        cancelled = True
    meta = _meta(
        backbone, built, benches, settings, config, users, seed, started, tuning, cancelled
    )
    meta["checkpoint"] = None if checkpoint.path is None else str(checkpoint.path)
    meta["resumed_questions"] = checkpoint.resumed
    result = report.summarise(records, fits, meta)
    if out_dir is not None:
        report.write_all(result, Path(out_dir))
    report_progress("evaluation done", 1.0)
    return result


@dataclass(frozen=True)
class _Group:
    """One fit's worth of work: a method on one case's questions at one cutoff."""

    method: BackboneMethod
    bench: Benchmark
    case: EvalCase
    cutoff: int
    questions: list[EvalQuestion]
    tag: dict  # what every record of the group carries (benchmark, case, method, ...)


def _run_group(
    group: _Group, config: EvalConfig, cancel, checkpoint: Checkpoint, records: list[dict]
) -> dict:
    """Fit (unless every result is already in the checkpoint), score the questions not yet done,
    and append each record to ``records`` and the checkpoint as it lands; returns the fit row
    (``Cancelled`` leaves the records so far in place)."""
    method, tag = group.method, group.tag
    stored = [
        checkpoint.question((tag["benchmark"], tag["case"], tag["method"], q.qid))
        for q in group.questions
    ]
    fit_row = checkpoint.fits.get(group_key(tag))
    if fit_row is not None and all(row is not None for row in stored):
        records += stored
        return fit_row
    start = time.perf_counter()
    state = method.fit(group.case.history(group.cutoff))
    fit = {
        "kind": "fit",
        "fit_seconds": time.perf_counter() - start,
        "trainable": method.trainable_params(state),
        "ttft": [],
        **tag,
    }
    try:
        with method.using(state):
            for q, row in zip(group.questions, stored):
                if row is not None:
                    records.append(row)
                    continue
                _check(cancel)
                row = {**_score(method, state, q, group.bench, config), **tag}
                checkpoint.add(row)
                records.append(row)
                if len(fit["ttft"]) < config.ttft_samples:
                    fit["ttft"].append(method.time_to_first_token(state, q))
    finally:
        method.release()
    checkpoint.add(fit)
    return fit


def _score(
    method: BackboneMethod, state, q: EvalQuestion, bench: Benchmark, config: EvalConfig
) -> dict:
    scores = method.score_options(state, q)
    predicted = max(range(len(scores)), key=scores.__getitem__)
    others = [s for i, s in enumerate(scores) if i != q.correct]
    row = {
        "kind": "question",
        "qid": q.qid,
        "qtype": q.qtype,
        "category": q.category,
        "scores": scores,
        "correct": q.correct,
        "predicted": predicted,
        "hit": predicted == q.correct,
        "margin": scores[q.correct] - sum(others) / len(others),
        "kv_tokens": method.kv_tokens(state, q),
    }
    if not config.generate:
        return row
    if bench.generative and q.category:
        asked = replace(q, prompt=q.prompt + GENERATION_SUFFIX)
        row["prediction"] = method.generate(state, asked, max_new_tokens=config.max_new_tokens)
        row["f1"] = locomo_f1(row["prediction"], q.reference, int(q.category))
    elif not bench.generative:
        # Free-form: the question and its answer prefix, never the options; the reply is then
        # checked for the options' values.
        reply = method.generate(state, q, max_new_tokens=config.max_new_tokens)
        row["reply"] = reply
        row["mentioned"] = mentioned(reply, q.options)
        row["gen_hit"] = row["mentioned"] == [q.correct]
    return row


def _settings(backbone, benches, names, config: EvalConfig, users: int, seed: int) -> dict:
    """Everything that decides the results, as the checkpoint's header holds it. The data files'
    paths are left out (their content is in the benchmarks' digests)."""
    cfg = {k: v for k, v in asdict(config).items() if k not in ("personas_path", "locomo_path")}
    return {
        "backbone": {
            "name": backbone.name,
            "device": str(backbone.device),
            "dtype": str(backbone.dtype),
            "quantization": backbone.quantization,
        },
        # Turns as (role, content) pairs: the digest is what a resumed run compares, so its
        # input keeps the shape every existing checkpoint was written with.
        "benchmarks": {
            b.name: digest(
                [
                    (
                        c.case_id,
                        [(t.role, t.content) for t in c.turns],
                        [asdict(q) for q in c.questions],
                    )
                    for c in b.cases
                ]
            )
            for b in benches
        },
        "methods": list(names),
        "config": cfg,
        "users": users,
        "seed": seed,
    }


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def _meta(
    backbone,
    methods,
    benches,
    settings: MethodSettings,
    config: EvalConfig,
    users: int,
    seed: int,
    started: float,
    tuning,
    cancelled: bool,
) -> dict:
    return {
        "backbone": backbone.name,
        "device": str(backbone.device),
        "dtype": str(backbone.dtype).replace("torch.", ""),
        "quantization": backbone.quantization,
        "context_window": backbone.context_window,
        "hidden_size": backbone.hidden_size,
        "kv_bytes_per_token": report.kv_bytes_per_token(backbone),
        "torch_threads": torch.get_num_threads(),
        "load_average_end": list(os.getloadavg()),
        "users": users,
        "seed": seed,
        "methods": [m.describe() for m in methods],
        "benchmarks": {
            b.name: {
                "cases": len(b.cases),
                "questions": b.n_questions,
                "qtypes": list(b.qtypes),
                "description": b.description,
            }
            for b in benches
        },
        "settings": {
            "steps": settings.steps,
            "batch_size": settings.batch_size,
            "lrs": {n: settings.lr(n) for n in FITTED},
            "soft_tokens": settings.soft_tokens,
            "lora_rank": settings.lora_rank,
            "retrieval_k": settings.retrieval_k,
            "answer_reserve": settings.answer_reserve,
            "generate": config.generate,
            "max_new_tokens": config.max_new_tokens,
        },
        "lr_tuning": tuning,
        "cancelled": cancelled,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
    }
