"""`lpm eval -b recall`: the projector card's recall table as a benchmark of the one harness.

The benchmark is the synthetic users of ``research/synthetic.py`` unchanged; the LPM ablations
change one thing each; the command runs the table's six methods by default.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from test_eval import FAST, _cli, _eval_args, fake_personas

from lpm_local.chat.encoding import Turn
from lpm_local.research.eval.cases import token_counter
from lpm_local.research.eval.methods import RECALL_METHODS, build_method
from lpm_local.research.eval.recall import QTYPES, RecallConfig, build_recall
from lpm_local.research.eval.runner import EvalConfig, run_eval
from lpm_local.research.synthetic import RECALL_TEMPLATES, SyntheticConfig, SyntheticUsers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def personas():
    return fake_personas()


def test_users_and_questions_are_the_synthetic_generators(personas, tiny_backbone):
    bench = build_recall(personas, RecallConfig(users=3), token_counter(tiny_backbone))
    users = SyntheticUsers(personas, "test", seed=0, config=SyntheticConfig())
    assert bench.qtypes == QTYPES and len(bench.cases) == 3
    for index, case in enumerate(bench.cases):
        user = users.user(index)
        assert case.turns == tuple(user.history()) and len(user.sessions) == 1
        trained = [q for q in case.questions if q.qtype == "recall_facts"]
        heldout = [q for q in case.questions if q.qtype == "recall_heldout_phrasing"]
        assert [(q.options, q.correct) for q in trained] == [
            (q.options, q.correct) for q in user.questions
        ]
        assert len(trained) == len(heldout) == len(user.persona.facts) <= 5
        history = " ".join(t.content for t in case.turns).lower()
        for q in case.questions:
            assert q.cutoff == len(case.turns)  # asked after the one session
            assert q.options[q.correct].lower().rstrip(".")[2:] in history
            wrong = [o for i, o in enumerate(q.options) if i != q.correct]
            assert not set(wrong) & set(user.persona.facts)  # distractors: other users' facts
        assert {q.prompt for q in trained} == {RECALL_TEMPLATES[0][0]}
        assert {q.prompt for q in heldout} <= {RECALL_TEMPLATES[i][0] for i in (2, 3)}
    assert (
        build_recall(personas, RecallConfig(users=3)).cases
        == build_recall(personas, RecallConfig(users=3)).cases
    )


def test_the_ablations_change_one_thing_each(tiny_backbone):
    history = [Turn("user", "I keep bees in Lyon."), Turn("assistant", "Noted!")]
    lpm, untrained, unfitted = (
        build_method(n, tiny_backbone, FAST) for n in ("lpm", "lpm_untrained", "lpm_unfitted")
    )
    # The tiny Qwen3 ships no projector: LPM's is the identity, the very one "untrained" builds.
    assert untrained.frozen.projector_sha256 == lpm.frozen.projector_sha256
    assert not untrained.frozen.shipped and untrained.describe()["projector"].startswith("identity")
    a, b = lpm.fit(history), untrained.fit(history)
    assert torch.equal(a.tensor, b.tensor)
    state = unfitted.fit(history)
    start = lpm.frozen.fresh_slots(history, seed=lpm.user_seed(history))
    assert torch.equal(state.tensor, start) and not torch.equal(a.tensor, start)
    assert unfitted.settings.steps == 0 and lpm.settings.steps == FAST.steps


def test_the_recall_table_runs_every_method(personas, tiny_backbone, tmp_path):
    bench = build_recall(personas, RecallConfig(users=1), token_counter(tiny_backbone))
    methods = [build_method(n, tiny_backbone, FAST) for n in RECALL_METHODS]
    result = run_eval(
        tiny_backbone,
        [bench],
        methods,
        config=EvalConfig(ttft_samples=0, max_new_tokens=3),
        out_dir=tmp_path,
    )
    table = result["benchmarks"]["recall"]["methods"]
    assert list(table) == list(RECALL_METHODS)
    for m in table.values():
        assert m["questions"] == bench.n_questions and set(m["per_type"]) == set(QTYPES)
        assert 0 <= m["gen_accuracy"] <= 1
    assert table["no_memory"]["trainable_params"] == 0 < table["lpm_unfitted"]["trainable_params"]
    text = (tmp_path / "eval.md").read_text()
    assert "## recall" in text and "held-out phr." in text


def test_the_command_defaults_to_the_recall_table(tiny_qwen3_dir, tmp_path):
    args = _eval_args(tmp_path, tiny_qwen3_dir, [])
    args += ["-b", "recall", "--max-new-tokens", "2"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert list(data["benchmarks"]) == ["recall"]
    assert list(data["benchmarks"]["recall"]["methods"]) == list(RECALL_METHODS)


def test_memory_eval_is_retired():
    from lpm_local.cli import main

    result = CliRunner().invoke(main, ["memory", "eval", "--help"])
    assert result.exit_code != 0 and "No such command" in result.output
