"""LoCoMo (Maharana et al., ACL 2024): very long two-person conversations and questions on them.

``load_locomo`` reads a file of ``locomo10.json``'s schema (a list of samples: ``sample_id``,
``conversation`` with ``speaker_a``/``speaker_b``, ``session_N_date_time`` and ``session_N``
turns ``{speaker, dia_id, text[, blip_caption]}``, and ``qa`` items ``{question, answer,
evidence, category}``). Speaker A's turns become ``user`` turns and speaker B's ``assistant``
turns, each prefixed with the speaker's name; each session opens with its date, which the
temporal questions need. Questions are asked after the whole conversation (LoCoMo's protocol).

Two scores:
- token F1 of a generated answer, categories 1-4, exactly as LoCoMo's ``task_eval/evaluation.py``
  computes it (lowercase, drop commas, punctuation and the words a/an/the/and, Porter stems; a
  multi-hop answer is split on commas; an open-domain answer keeps its part before ';');
- a four-option variant scored by log-likelihood, the distractors being other answers from the
  same conversation (same category first, so a date competes with dates).
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lpm_local.chat.encoding import Turn
from lpm_local.errors import BadInput
from lpm_local.research.eval.cases import (
    Benchmark,
    EvalCase,
    EvalQuestion,
    TokenCounter,
    approx_tokens,
    history_token_count,
)

CATEGORIES = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop"}
MAX_FILE_BYTES = 256 * 1024 * 1024  # locomo10.json is ~3 MB; anything this large is not LoCoMo
GENERATION_SUFFIX = " Answer with a short phrase, using words from our conversation where possible."


@dataclass(frozen=True)
class LocomoConfig:
    # Questions per conversation (None: all of categories 1-4), sampled evenly across categories:
    # full context over a ~20K-token conversation is the cost that bounds an evaluation.
    questions_per_conversation: int | None = 20
    categories: tuple[int, ...] = (1, 2, 3, 4)
    conversations: int | None = None  # the first N samples (None: all)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.questions_per_conversation is not None and self.questions_per_conversation < 1:
            raise ValueError("questions_per_conversation must be >= 1 or None")
        if not self.categories or set(self.categories) - set(CATEGORIES):
            raise ValueError(
                f"categories must be a subset of {sorted(CATEGORIES)}, got {self.categories}"
            )


def load_locomo(
    path: str | Path, config: LocomoConfig | None = None, count_tokens: TokenCounter = approx_tokens
) -> Benchmark:
    """A benchmark of one case per conversation (four-option questions with reference answers)."""
    config = config or LocomoConfig()
    path = Path(path)
    if not path.is_file():
        raise BadInput(
            "no such file", where=str(path), hint="pass a file of locomo10.json's schema"
        )
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BadInput("file too large for a LoCoMo file", where=str(path))
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"not JSON: {exc}", where=str(path)) from None
    if not isinstance(samples, list):
        raise BadInput("expected a list of conversations", where=str(path))
    samples = samples[: config.conversations] if config.conversations else samples
    cases = [
        _case(sample, f"{path.name}: item {i}", config, count_tokens)
        for i, sample in enumerate(samples)
    ]
    return Benchmark(
        "locomo",
        tuple(cases),
        tuple(CATEGORIES[c] for c in config.categories),
        generative=True,
        description=f"LoCoMo conversations from {path.name}",
    )


def conversation_turns(sample: dict, where: str) -> list[Turn]:
    conv = _get(sample, "conversation", dict, where)
    a, b = _get(conv, "speaker_a", str, where), _get(conv, "speaker_b", str, where)
    numbers = sorted(int(m.group(1)) for k in conv if (m := re.fullmatch(r"session_(\d+)", k)))
    turns: list[Turn] = []
    for n in numbers:
        session = _get(conv, f"session_{n}", list, where)
        date = conv.get(f"session_{n}_date_time")
        for k, turn in enumerate(session):
            here = f"{where}, session_{n}[{k}]"
            if not isinstance(turn, dict):
                raise BadInput("a turn must be an object", where=here)
            speaker, text = _get(turn, "speaker", str, here), _get(turn, "text", str, here)
            if speaker not in (a, b):
                raise BadInput(f"speaker {speaker!r} is neither {a!r} nor {b!r}", where=here)
            content = f"{speaker}: {text}"
            if isinstance(turn.get("blip_caption"), str):
                content += f" [shares a photo: {turn['blip_caption']}]"
            if k == 0 and isinstance(date, str):
                content = f"[{date}] {content}"
            turns.append(Turn("user" if speaker == a else "assistant", content))
    return turns


def _case(sample, where: str, config: LocomoConfig, count_tokens: TokenCounter) -> EvalCase:
    if not isinstance(sample, dict):
        raise BadInput("a conversation must be an object", where=where)
    sample_id = str(sample.get("sample_id", where))
    turns = conversation_turns(sample, where)
    items = []
    for k, qa in enumerate(_get(sample, "qa", list, where)):
        if (
            not isinstance(qa, dict)
            or qa.get("category") not in config.categories
            or "answer" not in qa
        ):
            continue  # adversarial (5) items have no "answer": never scored here
        answer = str(qa["answer"]).strip()
        if qa["category"] == 3:
            answer = answer.split(";")[0].strip()  # LoCoMo scores the first part only
        question = qa.get("question")
        if isinstance(question, str) and question.strip() and answer:
            items.append((k, question.strip(), answer, qa["category"]))
    rng = random.Random(f"locomo:{config.seed}:{sample_id}")
    chosen = _sample(rng, items, config.questions_per_conversation)
    questions = [_question(rng, sample_id, item, items, len(turns)) for item in chosen]
    tokens = history_token_count(turns, count_tokens)
    # One length bucket for all conversations (each is far beyond an 8K window): the report's
    # by-length view is PersonaMem's; per-conversation lengths stay in the meta and records.
    return EvalCase(
        "locomo",
        sample_id,
        tuple(turns),
        tuple(q for q in questions if q is not None),
        length_label="conversation",
        meta={"history_tokens": tokens, "qa_items": len(items)},
    )


def _sample(rng: random.Random, items: list, n: int | None) -> list:
    """Up to ``n`` items, spread evenly over categories (round robin over shuffled lists)."""
    if n is None or n >= len(items):
        return items
    by_cat: dict[int, list] = {}
    for item in items:
        by_cat.setdefault(item[3], []).append(item)
    for group in by_cat.values():
        rng.shuffle(group)
    out, cats = [], sorted(by_cat)
    while len(out) < n:
        for c in cats:
            if by_cat[c] and len(out) < n:
                out.append(by_cat[c].pop())
    return sorted(out)


def _question(
    rng: random.Random, sample_id: str, item, items: list, cutoff: int
) -> EvalQuestion | None:
    k, question, answer, category = item
    seen = {normalize_answer(answer)}
    pools = ([o[2] for o in items if o[3] == category], [o[2] for o in items])
    wrong: list[str] = []
    for pool in pools:  # same category first, then any other answer of this conversation
        pool = pool[:]
        rng.shuffle(pool)
        for other in pool:
            key = normalize_answer(other)
            if len(wrong) < 3 and key and key not in seen:
                seen.add(key)
                wrong.append(other)
    if len(wrong) < 3:
        return None  # too few distinct answers in this conversation for four options
    options = [answer] + wrong
    rng.shuffle(options)
    return EvalQuestion(
        f"{sample_id}/qa{k}",
        CATEGORIES[category],
        question,
        "",
        tuple(options),
        options.index(answer),
        cutoff,
        answer=answer,
        category=str(category),
    )


def _get(obj: dict, key: str, kind: type, where: str):
    value = obj.get(key)
    if not isinstance(value, kind):
        raise BadInput(f"field {key!r} missing or not a {kind.__name__}", where=where)
    return value


# -- LoCoMo's token F1 ---------------------------------------------------------------------------

_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """LoCoMo's normalisation: drop commas, lowercase, drop punctuation, drop a/an/the/and."""
    text = str(text).replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return " ".join(text.split())


def _stem(words: list[str]) -> list[str]:
    from nltk.stem import PorterStemmer  # LoCoMo stems with NLTK's Porter stemmer

    stemmer = PorterStemmer()
    return [stemmer.stem(w) for w in words]


def token_f1(prediction: str, reference: str) -> float:
    """Token F1 of two answers after normalisation and stemming (LoCoMo's ``f1_score``)."""
    pred, ref = (
        _stem(normalize_answer(prediction).split()),
        _stem(normalize_answer(reference).split()),
    )
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def multi_answer_f1(prediction: str, reference: str) -> float:
    """LoCoMo's multi-hop ``f1``: each comma-separated reference part takes its best-matching
    predicted part; the mean over reference parts."""
    preds = [p.strip() for p in str(prediction).split(",")]
    refs = [r.strip() for r in str(reference).split(",")]
    return sum(max(token_f1(p, r) for p in preds) for r in refs) / len(refs)


def locomo_f1(prediction: str, reference: str, category: int) -> float:
    """The score LoCoMo gives a generated answer of this category (1-4)."""
    if category == 1:
        return multi_answer_f1(prediction, reference)
    if category in (2, 3, 4):
        return token_f1(prediction, reference)
    raise ValueError(f"LoCoMo F1 is defined for categories 1-4, got {category}")
