"""`lpm eval`: benchmarks, time leakage, scoring paths, every method, reports, the command.

All on the tiny Qwen3 (random weights): the numbers mean nothing, the plumbing is what is tested.
An oracle method that reads the option text in its fitted history checks both that answers are
in the visible history and that nothing after a question's cutoff ever reaches it.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from lpm_local.chat.encoding import ChatFormat, Turn
from lpm_local.errors import BadInput
from lpm_local.memory.refit import RefitSettings
from lpm_local.memory.windows import qa_window
from lpm_local.research.eval.cases import EvalQuestion, token_counter
from lpm_local.research.eval.locomo import (
    LocomoConfig,
    load_locomo,
    locomo_f1,
    multi_answer_f1,
    normalize_answer,
    token_f1,
)
from lpm_local.research.eval.methods import (
    METHODS,
    BackboneMethod,
    Conditioning,
    MethodSettings,
    UserState,
    build_method,
)
from lpm_local.research.eval.methods.full_context import most_recent
from lpm_local.research.eval.personamem import QTYPES, PersonaMemConfig, build_personamem
from lpm_local.research.eval.runner import EvalConfig, run_eval
from lpm_local.research.eval.scoring import ContextCache, score_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny fits: no OpenMP oversubscription
JOBS = [
    "nurse",
    "teacher",
    "pilot",
    "baker",
    "welder",
    "chemist",
    "lawyer",
    "farmer",
    "driver",
    "singer",
]
LIKES = [
    "green tea",
    "old books",
    "hiking",
    "jazz",
    "red wine",
    "chess",
    "gardening",
    "cats",
    "surfing",
    "opera",
    "sushi",
    "poetry",
]
FAST = MethodSettings(steps=1, batch_size=4, retrieval_k=2, cache_min_tokens=32)


def fake_personas() -> dict:
    """MSC-shaped persona lists: facts and 'I like ...' sentences (the preference pool)."""
    out = {}
    for split in ("train", "valid", "test"):
        rng = random.Random(split)
        out[split] = [
            [
                f"I work as a {job}.",
                f"I like {rng.choice(LIKES)}.",
                f"I have {k + 2} brothers.",
                f"My home town is number {k} on the map.",
                f"I drive a {rng.choice(LIKES)} coloured car.",
            ]
            for k, job in enumerate(JOBS)
        ]
    return out


@pytest.fixture(scope="module")
def personas():
    return fake_personas()


@pytest.fixture(scope="module")
def bench(personas, tiny_backbone):
    return build_personamem(
        personas,
        PersonaMemConfig(users=2, history_tokens=(1500, 6000), users_per_length=(2, 1)),
        token_counter(tiny_backbone),
    )


def _text(turns) -> str:
    return " ".join(t.content.lower() for t in turns)


# -- the PersonaMem-style benchmark ----------------------------------------------------------


def test_every_user_gets_all_seven_types_with_four_distinct_options(bench):
    assert len(bench.cases) == 3
    for case in bench.cases:
        assert {q.qtype for q in case.questions} == set(QTYPES)
        for q in case.questions:
            assert len(q.options) == 4 and len(set(q.options)) == 4
            assert 0 <= q.correct < 4 and 0 < q.cutoff <= len(case.turns)
        assert len(case.by_cutoff()) == 2  # mid and end


def test_the_benchmark_is_seeded(personas):
    a = build_personamem(personas, PersonaMemConfig(users=2, history_tokens=(300,)))
    b = build_personamem(personas, PersonaMemConfig(users=2, history_tokens=(300,)))
    c = build_personamem(personas, PersonaMemConfig(users=2, history_tokens=(300,), seed=1))
    assert a.cases == b.cases
    assert a.cases != c.cases


def test_history_lengths_reach_their_targets_and_beyond_the_window(bench, tiny_backbone):
    count = token_counter(tiny_backbone)
    for case in bench.cases:
        measured = sum(count(t.content) + 5 for t in case.turns)
        target = int(case.length_label)
        assert (
            target <= measured <= 1.25 * target + 200
        )  # each of 4 gaps overshoots by < 1 exchange
    longest = max(bench.cases, key=lambda c: int(c.length_label))
    assert longest.meta["history_tokens"] > tiny_backbone.context_window


def test_mid_questions_know_the_old_taste_and_not_the_future_one(bench):
    for case in bench.cases:
        mid = case.meta["mid_cutoff"]
        seen, later = _text(case.turns[:mid]), _text(case.turns[mid:])
        latest = [
            q
            for q in case.questions
            if q.cutoff == mid and q.qtype == "acknowledge_latest_preference"
        ]
        assert len(latest) == 1
        q = latest[0]
        assert q.options[q.correct].lower() in seen
        future = [o for o in q.options if o.lower() in later and o.lower() not in seen]
        assert len(future) == 1  # the taste the user switches to later is a wrong option


# -- time leakage and real accuracy: an oracle that reads its fitted history -----------------


class Oracle(BackboneMethod):
    """Scores an option by where its text last occurs in the history it was fitted on (later is
    higher, absent is -1) and records the history length each question was scored with."""

    name = "oracle"
    label = "oracle"
    seen: list = []

    def fit(self, history):
        return UserState(tuple(history))

    def condition(self, state, question):
        return Conditioning()

    def score_options(self, state, question, options=None):
        Oracle.seen.append((question.qid, question.cutoff, len(state.history)))
        text = _text(state.history)
        return [float(text.rfind(o.lower().rstrip("."))) for o in (options or question.options)]


def test_each_question_sees_only_the_history_before_it(bench, tiny_backbone, tmp_path):
    Oracle.seen = []
    result = run_eval(
        tiny_backbone,
        [bench],
        [Oracle(tiny_backbone, FAST)],
        users=2,
        config=EvalConfig(ttft_samples=0, generate=False),
        out_dir=tmp_path,
    )
    assert len(Oracle.seen) == bench.n_questions
    assert all(cutoff == fitted for _, cutoff, fitted in Oracle.seen)
    records = result["records"]
    # Stated facts and the latest taste are in the visible history: the oracle gets them all,
    # including the mid-point taste that changes later (it would fail if later turns leaked in).
    stated = [r for r in records if r["qtype"] in ("recall_facts", "acknowledge_latest_preference")]
    assert len(stated) >= 12 and all(r["hit"] for r in stated)
    summary = result["benchmarks"]["personamem"]["methods"]["oracle"]
    assert summary["accuracy"] == pytest.approx(sum(r["hit"] for r in records) / len(records))
    assert summary["accuracy"] > 0.4  # well above chance: scores drive the accuracy


def test_runs_over_different_benchmarks_merge_into_one_report(bench, tiny_backbone, tmp_path):
    from lpm_local.research.eval.report import merge_results

    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([_locomo_sample()]))
    config = EvalConfig(ttft_samples=0, generate=False)
    oracle = Oracle(tiny_backbone, FAST)
    first = run_eval(tiny_backbone, [bench], [oracle], config=config)
    second = run_eval(tiny_backbone, [load_locomo(path)], [oracle], config=config)
    merged = merge_results([first, second])
    assert set(merged["benchmarks"]) == {"personamem", "locomo"}
    assert len(merged["records"]) == len(first["records"]) + len(second["records"])
    assert merged["benchmarks"]["personamem"] == first["benchmarks"]["personamem"]
    other = run_eval(
        tiny_backbone, [bench], [oracle], config=replace(config, methods=replace(FAST, steps=3))
    )
    with pytest.raises(ValueError, match="settings"):
        merge_results([first, other])


# -- scoring paths ---------------------------------------------------------------------------


def _question(
    prompt="What do I like?", prefix="You like", options=("green tea", "jazz", "cats", "chess")
):
    return EvalQuestion("q", "recall_facts", prompt, prefix, tuple(options), 0, 0)


@pytest.mark.parametrize("with_soft", [False, True])
def test_cached_context_scores_equal_the_batched_path(tiny_backbone, with_soft):
    chat = ChatFormat(tiny_backbone.tokenizer)
    context = [
        Turn("user", "I like green tea and old books."),
        Turn("assistant", "Noted!"),
        Turn("user", "My name is Ada and I live in Lyon."),
        Turn("assistant", "Nice to meet you, Ada."),
    ]
    soft = torch.randn(3, tiny_backbone.hidden_size) * 0.1 if with_soft else None
    q = _question()
    windows = [qa_window(chat, q.prompt, q.answer_prefix, o, context=context) for o in q.options]
    prefix = chat.context_ids(context)
    cache = ContextCache(tiny_backbone.model, soft, prefix)
    batched = score_windows(tiny_backbone.model, soft, windows)
    assert cache.score(windows) == pytest.approx(batched, abs=1e-4)
    assert cache.score(windows) == pytest.approx(batched, abs=1e-4)  # the cache was cropped back
    assert cache.cache.get_seq_length() == len(prefix) + (3 if with_soft else 0)


def test_cached_greedy_equals_the_engine(tiny_backbone):
    from lpm_local.chat.engine import ChatEngine

    engine = ChatEngine(tiny_backbone)
    chat = ChatFormat(tiny_backbone.tokenizer)
    ids = chat.prompt_ids([Turn("user", "Hello! How are you today?")])
    mine = ContextCache(tiny_backbone.model, None, ids[:5]).greedy(ids, 6, engine.eos_token_ids)
    theirs = engine.generate(torch.tensor([ids]), None, max_new_tokens=6)[0].tolist()
    assert mine == theirs[: len(mine)] and len(mine) == 6


def test_options_must_share_their_prompt(tiny_backbone):
    chat = ChatFormat(tiny_backbone.tokenizer)
    windows = [qa_window(chat, "a?", "", "x"), qa_window(chat, "b?", "", "y")]
    with pytest.raises(ValueError, match="same prompt"):
        score_windows(tiny_backbone.model, None, windows)


def test_full_context_keeps_the_most_recent_turns_within_budget(tiny_backbone):
    chat = ChatFormat(tiny_backbone.tokenizer)
    history = [Turn("user", f"Message number {k} about the sea.") for k in range(40)]
    kept = most_recent(chat, history, 120)
    used = sum(chat.turn_cost(t) for t in kept)
    assert kept and kept[-1] == history[-1] and used <= 120
    assert used + chat.turn_cost(history[-len(kept) - 1]) > 120
    small = replace(tiny_backbone, context_window=FAST.answer_reserve + 120)
    state = build_method("full_context", small, FAST).fit(history)
    assert state.extra["context"] == kept and state.extra["dropped_turns"] == 40 - len(kept)


def test_context_changes_the_scores(tiny_backbone):
    q = _question()
    history = [Turn("user", "I like green tea."), Turn("assistant", "Noted!")]
    none, full = (build_method(n, tiny_backbone, FAST) for n in ("no_memory", "full_context"))
    a, b = none.score_options(none.fit(history), q), full.score_options(full.fit(history), q)
    assert a != pytest.approx(b, abs=1e-6)
    assert full.kv_tokens(full.fit(history), q) > none.kv_tokens(none.fit(history), q)


# -- the methods -----------------------------------------------------------------------------

HISTORY = [
    Turn("user", "I like green tea and long walks."),
    Turn("assistant", "Noted!"),
    Turn("user", "Remember that my sister works as a nurse."),
    Turn("assistant", "I'll remember that."),
    Turn("user", "My name is Ada and I live in Lyon."),
    Turn("assistant", "Nice to meet you."),
]


def _logits(backbone):
    with torch.no_grad():
        return backbone.model(torch.tensor([[5, 6, 7, 8, 9]])).logits.clone()


@pytest.mark.parametrize("name", METHODS)
def test_every_method_fits_scores_generates_and_leaves_the_backbone_bare(tiny_backbone, name):
    before = _logits(tiny_backbone)
    method = build_method(name, tiny_backbone, FAST)
    state = method.fit(HISTORY)
    q = _question()
    with method.using(state):
        scores = method.score_options(state, q)
        answer = method.generate(state, q, max_new_tokens=3)
        ttft = method.time_to_first_token(state, q)
        kv = method.kv_tokens(state, q)
    assert len(scores) == 4 and all(s < 0 for s in scores)
    assert isinstance(answer, str) and ttft > 0 and kv > 0
    assert torch.equal(_logits(tiny_backbone), before)  # LoRA unloaded, nothing else touched
    assert not any("lora" in n for n, _ in tiny_backbone.model.named_modules())
    assert {"name", "label"} <= set(method.describe())


def test_trainable_numbers_per_user(tiny_backbone):
    h = tiny_backbone.hidden_size
    cfg = tiny_backbone.model.config
    counts = {
        n: build_method(n, tiny_backbone, FAST)
        for n in ("prompt_tuning", "lpm", "lpm_bank", "e2p", "lora", "retrieval")
    }
    got = {n: m.trainable_params(m.fit(HISTORY)) for n, m in counts.items()}
    assert got["prompt_tuning"] == got["lpm"] == 8 * h and got["e2p"] == h and got["retrieval"] == 0
    # The bank learns a low-rank change of its slots, as the app's refit does.
    bank = counts["lpm_bank"].frozen.config
    assert got["lpm_bank"] == RefitSettings().change_rank * (bank.n_slots + h)
    q_out, v_out = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    assert got["lora"] == cfg.num_hidden_layers * FAST.lora_rank * ((h + q_out) + (h + v_out))


def test_identity_lpm_is_prompt_tuning_from_the_salient_start(tiny_backbone, monkeypatch):
    """Without shipped weights LPM's projector is the identity: LPM is then prompt tuning that
    starts from the history's salient tokens instead of random vocabulary (same fit, same
    scores)."""
    import lpm_local.research.eval.methods.prompt_tuning as pt_module

    pt, lpm = (
        build_method("prompt_tuning", tiny_backbone, FAST),
        build_method("lpm", tiny_backbone, FAST),
    )
    assert not lpm.frozen.shipped
    q = _question()
    lpm_scores = lpm.score_options(lpm.fit(HISTORY), q)
    assert pt.score_options(pt.fit(HISTORY), q) != pytest.approx(
        lpm_scores, abs=1e-5
    )  # other start
    start = lpm.frozen.fresh_slots(list(HISTORY), seed=lpm.user_seed(HISTORY))
    monkeypatch.setattr(pt_module, "init_slots", lambda *a, **k: start.clone())
    assert pt.score_options(pt.fit(HISTORY), q) == pytest.approx(lpm_scores, abs=1e-5)


def test_prompt_tuning_loss_matches_peft(tiny_qwen3_dir, tiny_backbone):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from lpm_local.memory.lm import mean_loss
    from lpm_local.memory.windows import make_windows

    method = build_method("prompt_tuning", tiny_backbone, FAST)
    prompt = torch.randn(8, tiny_backbone.hidden_size) * 0.05
    window = make_windows(method.chat, HISTORY[:2])[0]
    ours = mean_loss(tiny_backbone.model, prompt.unsqueeze(0), [window])
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir), method.peft_config
    )
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(prompt)
        theirs = peft_model(
            input_ids=torch.tensor([window.input_ids]), labels=torch.tensor([window.labels])
        ).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


# -- LoCoMo ----------------------------------------------------------------------------------


def test_locomo_normalisation_and_f1_known_cases():
    assert normalize_answer("The Cat, and a Dog!") == "cat dog"
    assert normalize_answer("7 May, 2023.") == "7 may 2023"
    assert token_f1("running shoes", "Run shoe") == 1.0  # Porter stems
    assert token_f1("in Paris", "Paris") == pytest.approx(2 / 3)
    assert token_f1("nothing here", "Paris") == 0.0
    assert multi_answer_f1("painting, swimming", "swimming, pottery") == pytest.approx(0.5)
    assert locomo_f1("the psychology", "Psychology", 3) == 1.0
    with pytest.raises(ValueError):
        locomo_f1("x", "y", 5)


def _locomo_sample(sample_id="conv-x"):
    turns1 = [
        {"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a dog named Rex."},
        {
            "speaker": "Bob",
            "dia_id": "D1:2",
            "text": "Lovely! I started pottery.",
            "blip_caption": "a vase",
        },
    ]
    turns2 = [
        {"speaker": "Ann", "dia_id": "D2:1", "text": "We moved to Oslo."},
        {"speaker": "Bob", "dia_id": "D2:2", "text": "I ran a marathon in May."},
    ]
    qa = [
        {
            "question": "What is Ann's dog called?",
            "answer": "Rex",
            "evidence": ["D1:1"],
            "category": 4,
        },
        {"question": "Where did Ann move?", "answer": "Oslo", "evidence": ["D2:1"], "category": 4},
        {
            "question": "When did Bob run?",
            "answer": "May 2023",
            "evidence": ["D2:2"],
            "category": 2,
        },
        {
            "question": "What does Bob make?",
            "answer": "pottery; vases",
            "evidence": ["D1:2"],
            "category": 3,
        },
        {
            "question": "Hobbies of Bob?",
            "answer": "pottery, running",
            "evidence": ["D1:2"],
            "category": 1,
        },
        {"question": "Ann's cat?", "adversarial_answer": "Tom", "evidence": [], "category": 5},
    ]
    conv = {
        "speaker_a": "Ann",
        "speaker_b": "Bob",
        "session_1_date_time": "1 May 2023",
        "session_1": turns1,
        "session_2_date_time": "9 May 2023",
        "session_2": turns2,
    }
    return {"sample_id": sample_id, "conversation": conv, "qa": qa}


def test_locomo_loader_builds_turns_and_four_option_questions(tmp_path):
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([_locomo_sample()]))
    bench = load_locomo(path, LocomoConfig(questions_per_conversation=None))
    (case,) = bench.cases
    assert case.turns[0] == Turn("user", "[1 May 2023] Ann: I adopted a dog named Rex.")
    assert case.turns[1] == Turn(
        "assistant",
        "Bob: Lovely! I started pottery. [shares a photo: a vase]",
    )
    assert len(case.questions) == 5  # the adversarial item is not scored
    answers = {"Rex", "Oslo", "May 2023", "pottery", "pottery, running"}
    for q in case.questions:
        assert (
            q.cutoff == len(case.turns)
            and set(q.options) <= answers
            and q.options[q.correct] == q.answer
        )
    assert {q.qtype for q in case.questions} == {
        "single_hop",
        "temporal",
        "open_domain",
        "multi_hop",
    }


def test_locomo_refuses_a_malformed_file(tmp_path):
    path = tmp_path / "bad.json"
    sample = _locomo_sample()
    del sample["conversation"]["speaker_b"]
    path.write_text(json.dumps([sample]))
    with pytest.raises(BadInput, match=r"bad.json: item 0: field 'speaker_b'"):
        load_locomo(path)
    path.write_text("{not json")
    with pytest.raises(BadInput, match="not JSON"):
        load_locomo(path)


# -- the command -----------------------------------------------------------------------------


def _cli():
    from lpm_local.cli.base import LpmGroup
    from lpm_local.cli.evaluation import COMMANDS

    group = LpmGroup("lpm")
    for command in COMMANDS:
        group.add_command(command)
    return group


def _eval_args(tmp_path, model_dir, methods) -> list[str]:
    personas = tmp_path / "personas.json"
    personas.write_text(
        json.dumps(
            {
                s: [{"Speaker 1": p, "Speaker 2": p[::-1]} for p in ps]
                for s, ps in fake_personas().items()
            }
        )
    )
    locomo = tmp_path / "locomo.json"
    locomo.write_text(json.dumps([_locomo_sample()]))
    args = [
        "eval",
        "-m",
        str(model_dir),
        "--device",
        "cpu",
        "--quantize",
        "none",
        "--users",
        "1",
        "--history-tokens",
        "200",
        "--steps",
        "1",
        "--locomo-questions",
        "2",
        "--generate",
        "--max-new-tokens",
        "3",
        "--personas",
        str(personas),
        "--locomo",
        str(locomo),
        "--out",
        str(tmp_path / "out"),
    ]
    for name in methods:
        args += ["--method", name]
    return args


def _check_outputs(out, methods) -> None:
    data = json.loads((out / "eval.json").read_text())
    assert set(data["benchmarks"]) == {"personamem", "locomo"}
    for bench in data["benchmarks"].values():
        assert list(bench["methods"]) == list(methods)
        for m in bench["methods"].values():
            assert 0 <= m["accuracy"] <= 1 and m["kv_bytes"] > 0 and m["ttft_seconds"] > 0
    assert all("f1" in m for m in data["benchmarks"]["locomo"]["methods"].values())
    assert len(data["records"]) == sum(
        m["questions"] for b in data["benchmarks"].values() for m in b["methods"].values()
    )
    text = (out / "eval.md").read_text()
    assert "## personamem" in text and "## locomo" in text
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_command_writes_markdown_json_and_plot(tiny_qwen3_dir, tmp_path):
    methods = ("no_memory", "lpm")
    result = CliRunner().invoke(_cli(), _eval_args(tmp_path, tiny_qwen3_dir, methods))
    assert result.exit_code == 0, result.output
    _check_outputs(tmp_path / "out", methods)
    assert "LPM projector: identity (untrained)" in (tmp_path / "out" / "eval.md").read_text()


@pytest.mark.slow
def test_eval_command_runs_every_method(tiny_qwen3_dir, tmp_path):
    result = CliRunner().invoke(_cli(), _eval_args(tmp_path, tiny_qwen3_dir, METHODS))
    assert result.exit_code == 0, result.output
    _check_outputs(tmp_path / "out", METHODS)


def test_eval_command_rejects_bad_options(tiny_qwen3_dir):
    result = CliRunner().invoke(
        _cli(), ["eval", "--history-tokens", "lots", "-m", str(tiny_qwen3_dir)]
    )
    assert result.exit_code == 2 and "LENGTH" in result.output
    result = CliRunner().invoke(
        _cli(),
        [
            "eval",
            "--personas",
            "/nonexistent/p.json",
            "-b",
            "personamem",
            "-m",
            str(tiny_qwen3_dir),
            "--quantize",
            "none",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2 and "no such file" in result.output


def test_first_ctrl_c_asks_the_eval_to_stop_and_the_second_aborts():
    import signal
    import threading
    import time

    from lpm_local.cli.evaluation import stop_on_first_interrupt

    # To the main thread itself: os.kill() lets the kernel pick any thread of the process (the
    # suite leaves worker threads running), and the handler then runs a few bytecodes late.
    def interrupt() -> None:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    def settle(until=lambda: False) -> None:
        """Give the handler time to run: Python runs it at a later bytecode boundary of the main
        thread, which on a loaded machine can be after the next statement."""
        deadline = time.monotonic() + 5
        while not until() and time.monotonic() < deadline:
            time.sleep(0.001)

    before = signal.getsignal(signal.SIGINT)
    with stop_on_first_interrupt() as cancel:
        interrupt()
        settle(cancel.is_set)
        assert cancel.is_set()  # the run stops at its next check and writes its report
        with pytest.raises(KeyboardInterrupt):
            interrupt()
            settle()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_cancelled_run_still_writes_the_questions_it_finished(bench, tiny_backbone, tmp_path):
    import threading

    cancel = threading.Event()
    stages = []

    def progress(stage, fraction=None):
        stages.append(stage)
        if len(stages) == 2:  # the second group starts: let it finish its current question
            cancel.set()

    result = run_eval(
        tiny_backbone,
        [bench],
        [Oracle(tiny_backbone, FAST)],
        users=2,
        progress=progress,
        config=EvalConfig(ttft_samples=0, generate=False),
        out_dir=tmp_path,
        cancel=cancel,
    )
    assert result["meta"]["cancelled"]
    assert 0 < len(result["records"]) < bench.n_questions
    assert "CANCELLED" in (tmp_path / "eval.md").read_text()
