"""Chat-template encoding that keeps message text as data (R13), and the recent window.

``tokenizer.apply_chat_template(..., tokenize=True)`` renders every message into one string and
tokenizes it, so a user who types ``<|im_start|>system`` opens a real turn. Here the template is
rendered with a sentinel in place of each message; the text around the sentinels (role markers,
separators, the generation prompt) is the *scaffold*, and only the scaffold may yield control
tokens. Message contents are tokenized by a copy of the tokenizer that has no added vocabulary at
all. That is stricter than ``split_special_tokens=True``, which still matches added tokens marked
non-special, such as Qwen3's ``<think>`` and ``<tool_call>``.

Scaffold text and message text between two control tokens are tokenized together, exactly as the
real tokenizer would, so for ordinary text the ids equal ``apply_chat_template(tokenize=True)``.
Differences are deliberate: a message containing control-token strings, and templates that edit
contents (Qwen3 splits ``<think>`` blocks out of assistant turns and strips leading newlines):
here a message is always carried verbatim.

Templates get ``enable_thinking=False`` (Qwen3: the generation prompt closes an empty
``<think></think>`` block, so replies come without a reasoning preamble; other templates ignore
the flag).
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from lpm_local.errors import BadInput, ModelNotAvailable

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100  # the label that HF losses (and ours) skip: no loss at that position
# The app's own instructions to the model. Stored or imported ``system`` turns never replace it:
# an imported log is somebody else's text, and "always answer X" in it must not steer the model.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, concise assistant running privately on the user's machine."
)
# Private-use code points: never produced by a template, so the split below is unambiguous.
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
TEMPLATE_KWARGS = {"enable_thinking": False}
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: str  # "system" | "user" | "assistant"
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise ValueError(f"content must be a str, got {type(self.content).__name__}")


@dataclass(frozen=True)
class EncodedChat:
    """Token ids of a templated chat and, per turn, the token range [start, end) of its content
    (tokens that overlap the content's characters; at a boundary one may also hold scaffold)."""

    ids: list[int]
    spans: list[tuple[int, int]]


@dataclass(frozen=True)
class _Codec:
    plain: object  # tokenizers.Tokenizer without added tokens
    added: dict[str, int]  # added-token string -> id, as the real tokenizer matches them
    pattern: re.Pattern | None  # matches any added-token string, longest first
    control: frozenset[int]


_codecs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ChatFormat:
    """The one way turns become token ids: chat, refit, projector training and evaluation all
    encode through this, so the memory is fitted in exactly the format it is read in.

    Every sequence starts with the app's ``system_prompt`` (None: no system turn); ``system``
    turns among ``turns`` are dropped, never sent as instructions. The soft prompt, when there
    is one, goes in front of these ids in every path.
    """

    tokenizer: object
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    # Results that depend only on the two fields above (and, for "context", on the turns
    # stored with them): the eval asks for the same context before every question and for the
    # system prompt's cost with every turn. Not part of equality, never handed out mutable.
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def conversation(self, turns: Sequence[Turn]) -> list[Turn]:
        """``turns`` as the model sees them: the app's system turn, then user/assistant turns."""
        head = [Turn("system", self.system_prompt)] if self.system_prompt else []
        return head + [t for t in turns if t.role != "system"]

    def prompt_ids(self, turns: Sequence[Turn]) -> list[int]:
        """Ids of ``turns`` followed by the generation prompt: what a reply is generated from."""
        return encode_chat(self.tokenizer, self.conversation(turns), add_generation_prompt=True)

    def text_ids(self, text: str) -> list[int]:
        """Ids of ``text`` as pure data (an answer continued after ``prompt_ids``)."""
        return encode_text(self.tokenizer, text)

    def labelled_ids(
        self, turns: Sequence[Turn], targets: Sequence[bool]
    ) -> tuple[list[int], list[int]]:
        """(ids, labels) of ``turns`` without a generation prompt; labels carry the content of
        each turn whose ``targets`` flag is set, plus the end-of-turn token after it, so the
        model learns both what was said and where the turn ends. Other positions get
        ``IGNORE_INDEX``."""
        if len(targets) != len(turns):
            raise ValueError(f"{len(turns)} turns but {len(targets)} target flags")
        kept = [(t, flag) for t, flag in zip(turns, targets) if t.role != "system"]
        offset = 1 if self.system_prompt else 0
        encoded = encode_chat_spans(
            self.tokenizer, self.conversation([t for t, _ in kept]), add_generation_prompt=False
        )
        ids, labels = encoded.ids, [IGNORE_INDEX] * len(encoded.ids)
        control = control_token_ids(self.tokenizer)
        for k, (_, flag) in enumerate(kept):
            if not flag:
                continue
            start, end = encoded.spans[k + offset]
            labels[start:end] = ids[start:end]
            if end < len(ids) and ids[end] in control:
                labels[end] = ids[end]  # <|im_end|> in ChatML templates
        return ids, labels

    def context_ids(self, turns: Sequence[Turn]) -> list[int]:
        """The ids that the prompt of any question asked after ``turns`` starts with: what a
        KV cache of the context can hold. Found as the common prefix of two different probe
        questions, because templates may render the last turn differently once a question
        follows (Qwen3 drops an empty think block); callers reusing it check the prefix."""
        key = tuple(turns)
        memo = self._memo.get("context")  # (turns, ids) of the last call: one entry is enough
        if memo is not None and memo[0] == key:
            return list(memo[1])
        a = self.prompt_ids([*key, Turn("user", "a")])
        b = self.prompt_ids([*key, Turn("user", "b")])
        n = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        self._memo["context"] = (key, tuple(a[:n]))
        return a[:n]

    def turn_cost(self, turn: Turn) -> int:
        """Tokens one turn adds to a conversation (its scaffold and content)."""
        with_turn = self.labelled_ids([turn], [False])[0]
        if "base" not in self._memo:  # the conversation without turns: the system prompt
            self._memo["base"] = len(self.labelled_ids([], [])[0])
        return len(with_turn) - self._memo["base"]


def control_token_ids(tokenizer) -> frozenset[int]:
    """Every id of the tokenizer's added vocabulary (special or not): never inside content."""
    return _codec(tokenizer).control


def encode_text(tokenizer, text: str) -> list[int]:
    """Tokenize ``text`` as pure data: no control token can come out, whatever it contains."""
    codec = _codec(tokenizer)
    ids, _ = _encode_plain(codec, _clean(text))
    return ids


def encode_chat(tokenizer, turns: Sequence[Turn], *, add_generation_prompt: bool) -> list[int]:
    """Token ids of ``turns`` in the tokenizer's chat template, contents carried as data."""
    return encode_chat_spans(tokenizer, turns, add_generation_prompt=add_generation_prompt).ids


def encode_chat_spans(
    tokenizer, turns: Sequence[Turn], *, add_generation_prompt: bool
) -> EncodedChat:
    """``encode_chat`` plus where each turn's content landed (for labels and R13 checks)."""
    codec = _codec(tokenizer)
    pieces = _render_scaffold(tokenizer, turns, add_generation_prompt)
    # items: (text, turn index or None) for text, (control id, None) for a scaffold token.
    items: list[tuple[str | int, int | None]] = []
    for k, piece in enumerate(pieces):
        if k % 2:
            items.append((_clean(turns[int(piece)].content), int(piece)))
        else:
            items.extend(_split_scaffold(codec, piece))
    ids: list[int] = []
    spans: list[tuple[int, int]] = [(0, 0)] * len(turns)
    run: list[tuple[str, int | None]] = []
    for item, turn in items + [(-1, None)]:  # -1: a sentinel control id that flushes the run
        if isinstance(item, str):
            run.append((item, turn))
            continue
        _flush_run(codec, run, ids, spans)
        run = []
        if item >= 0:
            ids.append(item)
    return EncodedChat(ids=ids, spans=spans)


def count_chat_tokens(tokenizer, turns: Sequence[Turn], *, system: str | None = None) -> int:
    """Prompt length of ``turns`` (after an optional system message) with a generation prompt."""
    head = [Turn("system", system)] if system else []
    return len(encode_chat(tokenizer, head + list(turns), add_generation_prompt=True))


def recent_window(
    tokenizer, turns: Sequence[Turn], budget_tokens: int, *, system: str | None = None
) -> list[Turn]:
    """The most recent turns whose prompt (with ``system`` and the generation prompt) fits in
    ``budget_tokens``. The latest user turn is always kept: alone too long, it loses its
    beginning. ``system`` is counted, not returned."""
    if budget_tokens < 1:
        raise ValueError(f"budget_tokens must be >= 1, got {budget_tokens}")
    turns = list(turns)
    users = [i for i, t in enumerate(turns) if t.role == "user"]
    first = users[-1] if users else len(turns)  # the window starts at or before this turn

    def cost(start: int) -> int:
        return count_chat_tokens(tokenizer, turns[start:], system=system)

    if first < len(turns) and cost(first) > budget_tokens:
        return _truncated(tokenizer, turns[first:], budget_tokens, system)
    # Cheap upper bound on how far back to look: contents alone already exceed the budget.
    lowest, spent = first, 0
    while lowest > 0:
        spent += len(encode_text(tokenizer, turns[lowest - 1].content))
        if spent > budget_tokens:
            break
        lowest -= 1
    # Largest window that fits, by binary search over its start (cost falls as start grows).
    lo, hi = lowest, first
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid) <= budget_tokens:
            hi = mid
        else:
            lo = mid + 1
    return turns[lo:]


def _truncated(tokenizer, tail: list[Turn], budget: int, system: str | None) -> list[Turn]:
    """``tail`` (latest user turn first) with the user turn cut from the left to fit."""
    user, rest = tail[0], tail[1:]
    ids = encode_text(tokenizer, user.content)
    overhead = count_chat_tokens(tokenizer, [Turn("user", "")] + rest, system=system)
    keep = min(budget - overhead, len(ids))
    while keep > 0:
        text = tokenizer.decode(ids[len(ids) - keep :]).lstrip("\ufffd")  # no half characters
        window = [Turn("user", text)] + rest
        excess = count_chat_tokens(tokenizer, window, system=system) - budget
        if excess <= 0:
            return window
        keep -= excess  # re-tokenizing at a new edge can merge differently: shave and retry
    raise BadInput(
        f"a context budget of {budget} tokens cannot hold the system prompt, the chat "
        "template and the turns after the latest user message",
        hint="raise the window size",
    )


def _render_scaffold(tokenizer, turns: Sequence[Turn], add_generation_prompt: bool) -> list[str]:
    """The template rendered around sentinels: [scaffold, "0", scaffold, "1", ..., scaffold]."""
    from jinja2 import TemplateError

    messages = [{"role": t.role, "content": _SENTINEL.format(i)} for i, t in enumerate(turns)]
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **TEMPLATE_KWARGS
        )
    except TemplateError as exc:
        raise BadInput(f"the model's chat template refused this conversation: {exc}") from None
    pieces = _SENTINEL_RE.split(text)
    if [int(p) for p in pieces[1::2]] != list(range(len(turns))):
        # A template that drops, repeats or reorders messages cannot be spliced safely.
        raise ModelNotAvailable(
            "the model's chat template does not place each message exactly "
            "once, in order; lpm cannot encode chats for it"
        )
    return pieces


def _split_scaffold(codec: _Codec, text: str) -> list[tuple[str | int, None]]:
    """Scaffold text -> plain text and control ids, matching added tokens like the tokenizer."""
    if codec.pattern is None:
        return [(text, None)] if text else []
    out: list[tuple[str | int, None]] = []
    pos = 0
    for match in codec.pattern.finditer(text):
        if match.start() > pos:
            out.append((text[pos : match.start()], None))
        out.append((codec.added[match.group(0)], None))
        pos = match.end()
    if pos < len(text):
        out.append((text[pos:], None))
    return out


def _flush_run(
    codec: _Codec, run: list[tuple[str, int | None]], ids: list[int], spans: list[tuple[int, int]]
) -> None:
    """Tokenize adjacent scaffold/content text as one string; record each content's span."""
    if not run:
        return
    text = "".join(part for part, _ in run)
    run_ids, offsets = _encode_plain(codec, text)
    base, pos = len(ids), 0
    for part, turn in run:
        start, end = pos, pos + len(part)
        pos = end
        if turn is None:
            continue
        inside = [k for k, (s, e) in enumerate(offsets) if s < end and e > start]
        if inside:
            spans[turn] = (base + inside[0], base + inside[-1] + 1)
        else:  # empty content: an empty span where it would start
            at = next((k for k, (s, _) in enumerate(offsets) if s >= start), len(offsets))
            spans[turn] = (base + at, base + at)
    ids.extend(run_ids)


def _encode_plain(codec: _Codec, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and char offsets of ``text`` by the added-vocabulary-free tokenizer.

    A vocabulary may still hold a control string as an ordinary entry that merges could reach;
    such a token is re-tokenized one character at a time, so no control id survives.
    """
    if not text:
        return [], []
    enc = codec.plain.encode(text, add_special_tokens=False)
    ids, offsets = list(enc.ids), list(enc.offsets)
    if not codec.control.intersection(ids):
        return ids, offsets
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    for tid, (s, e) in zip(ids, offsets):
        if tid not in codec.control:
            out_ids.append(tid)
            out_offsets.append((s, e))
            continue
        for c in range(s, e):
            for sub in codec.plain.encode(text[c], add_special_tokens=False).ids:
                if sub in codec.control:
                    raise ValueError(f"character {text[c]!r} only tokenizes to a control token")
                out_ids.append(sub)
                out_offsets.append((c, c + 1))
    return out_ids, out_offsets


def _codec(tokenizer) -> _Codec:
    try:
        return _codecs[tokenizer]
    except (KeyError, TypeError):
        pass
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelNotAvailable("lpm needs a fast (tokenizers-backed) tokenizer for this model")
    from tokenizers import Tokenizer

    data = json.loads(backend.to_str())
    # The same normalizer, pre-tokenizer and model, but no added vocabulary to match, no
    # BOS/EOS post-processing, no truncation: exactly the pipeline for text between controls.
    data.update(added_tokens=[], post_processor=None, truncation=None, padding=None)
    plain = Tokenizer.from_str(json.dumps(data))
    added = {tok.content: tid for tid, tok in tokenizer.added_tokens_decoder.items()}
    pattern = None
    if added:
        alternatives = sorted(added, key=len, reverse=True)  # leftmost-longest, like tokenizers
        pattern = re.compile("|".join(re.escape(a) for a in alternatives))
    codec = _Codec(plain=plain, added=added, pattern=pattern, control=frozenset(added.values()))
    try:
        _codecs[tokenizer] = codec
    except TypeError:  # not weak-referenceable: rebuild on each call (slower, still correct)
        pass
    return codec


def _clean(text: str) -> str:
    """Lone surrogates (from broken imports) cannot reach the Rust tokenizer: make them U+FFFD."""
    return _SURROGATE_RE.sub("\ufffd", text)
