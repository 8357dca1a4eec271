"""Learning-rate choice for the fitted methods: same grid, validation users, best mean margin.

Each fitted method (prompt tuning, LoRA, LPM, E2P) gets its own best rate from the same grid,
chosen on PersonaMem users of the MSC ``valid`` split (never the held-out ``test`` users) by the
mean log-likelihood margin of the correct option over the others, as the recall table's search did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from lpm_local.research.eval.cases import token_counter
from lpm_local.research.eval.methods import MethodSettings, build_method
from lpm_local.research.eval.personamem import PersonaMemConfig, build_personamem


def tune_learning_rates(
    backbone,
    names: Sequence[str],
    settings: MethodSettings,
    config,
    *,
    seed: int,
    progress: Callable[[str, "float | None"], None],
) -> dict:
    """{"chosen": {method: lr}, "table": {method: {lr: {"margin", "accuracy"}}}, ...}."""
    from lpm_local.research.eval import data

    bench = build_personamem(
        data.personas(config.personas_path),
        PersonaMemConfig(
            users=config.tune_users,
            history_tokens=config.personamem.history_tokens[:1],
            split="valid",
            seed=seed,
            mid_questions=False,
        ),
        token_counter(backbone),
    )
    table: dict[str, dict[str, dict]] = {}
    chosen: dict[str, float] = {}
    runs, done = len(names) * len(config.lr_grid), 0
    for name in names:
        table[name] = {}
        for lr in config.lr_grid:
            progress(f"lr search: {name} lr={lr:g}", done / max(runs, 1))
            method = build_method(name, backbone, replace(settings, lrs=((name, lr),)))
            table[name][f"{lr:g}"] = _margins(method, bench)
            done += 1
        chosen[name] = max(config.lr_grid, key=lambda lr: table[name][f"{lr:g}"]["margin"])
    return {
        "grid": list(config.lr_grid),
        "users": config.tune_users,
        "split": "valid",
        "chosen": chosen,
        "table": table,
    }


def _margins(method, bench) -> dict:
    margins, hits = [], []
    for case in bench.cases:
        for cutoff, questions in case.by_cutoff():
            state = method.fit(case.history(cutoff))
            with method.using(state):
                for q in questions:
                    scores = method.score_options(state, q)
                    others = [s for i, s in enumerate(scores) if i != q.correct]
                    margins.append(scores[q.correct] - sum(others) / len(others))
                    hits.append(max(range(len(scores)), key=scores.__getitem__) == q.correct)
            method.release()
    n = max(len(margins), 1)
    return {"margin": sum(margins) / n, "accuracy": sum(hits) / n, "questions": len(margins)}
