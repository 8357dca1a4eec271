"""Evaluation: benchmarks (PersonaMem-style, LoCoMo), the compared methods, reports, benchmarks of
speed (``lpm eval``, ``lpm bench``). Heavy imports happen inside the functions that need them."""

from __future__ import annotations

from lpm_local.research.eval.cases import Benchmark, EvalCase, EvalQuestion

__all__ = ["Benchmark", "EvalCase", "EvalQuestion", "run_eval", "run_bench"]


def __getattr__(name: str):
    # Lazy: `import lpm_local.research.eval` stays cheap (no torch/peft) for the CLI's --help.
    if name == "run_eval":
        from lpm_local.research.eval.runner import run_eval

        return run_eval
    if name == "run_bench":
        from lpm_local.research.eval.bench import run_bench

        return run_bench
    raise AttributeError(name)
