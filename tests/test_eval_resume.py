"""An interrupted `lpm eval` resumes where it stopped, and never mixes results of other settings.

A real (tiny Qwen3) run of no memory and LPM is interrupted by a method that raises after k
questions (as a crash would) or by the cancel event (as Ctrl-C does); the rerun skips what the
checkpoint holds, and its report equals an uninterrupted run's, timings aside.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace

import pytest
from click.testing import CliRunner
from test_eval import FAST, _cli, _eval_args, fake_personas

from lpm_local.errors import BadInput
from lpm_local.research.eval.cases import token_counter
from lpm_local.research.eval.checkpoint import FILENAME
from lpm_local.research.eval.methods import build_method
from lpm_local.research.eval.methods.lpm import LatentPersonalMemory
from lpm_local.research.eval.personamem import PersonaMemConfig, build_personamem
from lpm_local.research.eval.runner import EvalConfig, run_eval

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIG = EvalConfig(methods=FAST, ttft_samples=1, max_new_tokens=3)
TIMINGS = ("fit_seconds", "ttft_seconds")


class Crash(Exception):
    """Stands for the process dying mid-run."""


class CrashingLpm(LatentPersonalMemory):
    """LPM that dies on its ``after``-th scored question (same name and settings as LPM)."""

    def __init__(self, backbone, settings, after: int):
        super().__init__(backbone, settings)
        self.after, self.scored = after, 0

    def score_options(self, state, question, options=None):
        if self.scored == self.after:
            raise Crash()
        self.scored += 1
        return super().score_options(state, question, options)


@pytest.fixture(scope="module")
def bench(tiny_backbone):
    return build_personamem(
        fake_personas(),
        PersonaMemConfig(users=1, history_tokens=(200,)),
        token_counter(tiny_backbone),
    )


@pytest.fixture(scope="module")
def uninterrupted(bench, tiny_backbone, tmp_path_factory):
    methods = [build_method(n, tiny_backbone, FAST) for n in ("no_memory", "lpm")]
    out = tmp_path_factory.mktemp("whole")
    return run_eval(tiny_backbone, [bench], methods, config=CONFIG, out_dir=out)


def _comparable(result: dict) -> tuple:
    """What must be equal between two runs: every question's record and the summaries, without
    wall times."""
    summaries = json.loads(json.dumps(result["benchmarks"]))
    for bench in summaries.values():
        for m in bench["methods"].values():
            for key in TIMINGS:
                m.pop(key)
    records = json.loads(json.dumps(result["records"]))
    return records, summaries


def test_a_crashed_run_resumes_and_reports_as_if_never_stopped(
    bench, tiny_backbone, uninterrupted, tmp_path
):
    per_group = [len(qs) for _, qs in bench.cases[0].by_cutoff()]
    k = per_group[0] + 2  # LPM dies inside its second group, after 2 of its questions
    methods = [build_method("no_memory", tiny_backbone, FAST), CrashingLpm(tiny_backbone, FAST, k)]
    with pytest.raises(Crash):
        run_eval(tiny_backbone, [bench], methods, config=CONFIG, out_dir=tmp_path)
    lines = (tmp_path / FILENAME).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert (
        rows[0]["kind"] == "header"
        and oct(os.stat(tmp_path / FILENAME).st_mode & 0o777)[-3:] == "600"
    )
    done = [r for r in rows if r["kind"] == "question"]
    assert len([r for r in done if r["method"] == "lpm"]) == k
    # Both methods' first group, no memory's second, and LPM's two before it died.
    assert len(done) == 2 * per_group[0] + per_group[1] + 2
    assert not (tmp_path / "eval.json").exists()  # the crash wrote no report

    resumed = run_eval(
        tiny_backbone,
        [bench],
        [build_method(n, tiny_backbone, FAST) for n in ("no_memory", "lpm")],
        config=CONFIG,
        out_dir=tmp_path,
    )
    assert resumed["meta"]["resumed_questions"] == len(done)
    assert _comparable(resumed) == _comparable(uninterrupted)
    after = [json.loads(line) for line in (tmp_path / FILENAME).read_text().splitlines()]
    questions = [r for r in after if r["kind"] == "question"]
    assert len(questions) == bench.n_questions * 2  # nothing scored twice
    again = run_eval(
        tiny_backbone,
        [bench],
        [build_method(n, tiny_backbone, FAST) for n in ("no_memory", "lpm")],
        config=CONFIG,
        out_dir=tmp_path,
    )
    assert again["meta"]["resumed_questions"] == bench.n_questions * 2
    assert _comparable(again) == _comparable(uninterrupted)


def test_a_cancelled_run_resumes_too(bench, tiny_backbone, uninterrupted, tmp_path):
    cancel = threading.Event()
    seen = []

    def progress(stage, fraction=None):
        seen.append(stage)
        if len(seen) == 3:  # the third group starts: it stops before its first question
            cancel.set()

    methods = [build_method(n, tiny_backbone, FAST) for n in ("no_memory", "lpm")]
    first = run_eval(
        tiny_backbone,
        [bench],
        methods,
        config=CONFIG,
        out_dir=tmp_path,
        cancel=cancel,
        progress=progress,
    )
    assert first["meta"]["cancelled"] and 0 < len(first["records"]) < bench.n_questions * 2
    second = run_eval(tiny_backbone, [bench], methods, config=CONFIG, out_dir=tmp_path)
    assert not second["meta"]["cancelled"]
    assert second["meta"]["resumed_questions"] == len(first["records"])
    assert _comparable(second) == _comparable(uninterrupted)


def test_other_settings_refuse_to_mix_and_fresh_starts_over(bench, tiny_backbone, tmp_path):
    methods = [build_method("no_memory", tiny_backbone, FAST)]
    run_eval(tiny_backbone, [bench], methods, config=CONFIG, out_dir=tmp_path)
    other = replace(CONFIG, max_new_tokens=5)
    with pytest.raises(BadInput, match=r"other settings \(config.max_new_tokens\).*--fresh") as err:
        run_eval(tiny_backbone, [bench], methods, config=other, out_dir=tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(BadInput, match="other settings"):
        run_eval(tiny_backbone, [bench], methods, config=CONFIG, out_dir=tmp_path, seed=1)
    fresh = run_eval(tiny_backbone, [bench], methods, config=other, out_dir=tmp_path, fresh=True)
    assert fresh["meta"]["resumed_questions"] == 0
    # A method set up otherwise (here: another learning rate for LPM) is refused as well.
    lpm = [build_method("lpm", tiny_backbone, FAST)]
    run_eval(tiny_backbone, [bench], lpm, config=CONFIG, out_dir=tmp_path / "lpm")
    faster = [build_method("lpm", tiny_backbone, replace(FAST, lrs=(("lpm", 0.5),)))]
    with pytest.raises(BadInput, match="methods set up otherwise"):
        run_eval(tiny_backbone, [bench], faster, config=CONFIG, out_dir=tmp_path / "lpm")


def test_a_line_torn_by_a_kill_is_redone(bench, tiny_backbone, uninterrupted, tmp_path):
    methods = [build_method(n, tiny_backbone, FAST) for n in ("no_memory", "lpm")]
    run_eval(tiny_backbone, [bench], methods[:1], config=CONFIG, out_dir=tmp_path / "x")
    path = tmp_path / "x" / FILENAME
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # killed mid-write
    result = run_eval(tiny_backbone, [bench], methods[:1], config=CONFIG, out_dir=tmp_path / "x")
    assert result["meta"]["resumed_questions"] == 2  # header, methods, then 2 whole rows
    assert all(json.loads(line) for line in path.read_text().splitlines())
    theirs = [r for r in uninterrupted["records"] if r["method"] == "no_memory"]
    assert json.loads(json.dumps(result["records"])) == json.loads(json.dumps(theirs))


def test_the_command_resumes_and_refuses_other_settings_in_one_line(tiny_qwen3_dir, tmp_path):
    args = _eval_args(tmp_path, tiny_qwen3_dir, ["no_memory"])
    args[args.index("--users") + 1] = "1"
    args += ["-b", "personamem"]
    first = CliRunner().invoke(_cli(), args)
    assert first.exit_code == 0, first.output
    assert "generative" in first.output
    second = CliRunner().invoke(_cli(), args)
    assert second.exit_code == 0 and "resumed:" in second.output, second.output
    other = list(args)
    other[other.index("--max-new-tokens") + 1] = "4"
    refused = CliRunner().invoke(_cli(), other)
    assert refused.exit_code == 2
    error = [line for line in refused.output.splitlines() if "other settings" in line]
    assert len(error) == 1 and "--fresh" in error[0], refused.output
    started_over = CliRunner().invoke(_cli(), other + ["--fresh"])
    assert started_over.exit_code == 0 and "resumed:" not in started_over.output
