"""Chat-completion requests in, completion bodies and stream chunks out (OpenAI's shapes).

Parsing is strict where a silent misreading would surprise the user (a tool role, ``n`` > 1,
an image part, a value out of range: 400 with the field named in ``param``) and lenient where
front-ends differ harmlessly (unknown fields are ignored, as OpenAI-compatible servers do).
Sizes are capped here too: too many messages or one too long is 413, like a body over the
byte cap, so a client cannot make the server tokenize megabytes for one reply.

Message text is only ever carried as text: it reaches the model through ``ChatSession``, whose
encoder tokenizes contents as data, so ``<|im_start|>`` typed in a message stays characters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lpm_local.chat.encoding import Turn
from lpm_local.server.errors import ApiError


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for."""

    max_body_bytes: int = 1_000_000
    max_message_chars: int = 32_000
    max_messages: int = 256
    max_tokens: int = 4096  # the most ``max_tokens`` a request may ask for
    default_max_tokens: int = 512
    max_stops: int = 4  # OpenAI's own limit


@dataclass(frozen=True)
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    model: str
    dialogue: tuple[Turn, ...]  # user/assistant turns, the last one the user's new message
    system: str | None = None  # the client's own system message(s), joined
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a final chunk with usage
    max_tokens: int = 512
    temperature: float | None = None  # None: the assistant's default (greedy)
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    user: str | None = None

    @property
    def prior(self) -> tuple[Turn, ...]:
        """The conversation before the new message (what the client resent)."""
        return self.dialogue[:-1]

    @property
    def message(self) -> str:
        """The new user message."""
        return self.dialogue[-1].content


def parse_chat_request(body: Any, limits: Limits) -> ChatRequest:
    """Validate a decoded JSON body; raises ``ApiError`` (400 or 413) naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "`model` is required: a model id from GET /v1/models", param="model")
    system, dialogue = _parse_messages(body.get("messages"), limits)
    n = body.get("n")
    if n is not None and n != 1:
        raise ApiError(400, "only n=1 is supported (one model, one reply)", param="n")
    stream = _optional(body, "stream", bool) or False
    options = _optional(body, "stream_options", dict) or {}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise ApiError(400, "`max_tokens` must be an integer", param="max_tokens")
    elif not 1 <= max_tokens <= limits.max_tokens:
        raise ApiError(
            400, f"`max_tokens` must be between 1 and {limits.max_tokens}", param="max_tokens"
        )
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p is not None and top_p == 0.0:
        raise ApiError(400, "`top_p` must be above 0", param="top_p")
    user = _optional(body, "user", str) or None
    return ChatRequest(
        model=model,
        dialogue=tuple(dialogue),
        system=system,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=_parse_stop(body.get("stop"), limits),
        user=user,
    )


def _parse_messages(messages: Any, limits: Limits) -> tuple[str | None, list[Turn]]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list", param="messages")
    if len(messages) > limits.max_messages:
        raise ApiError(
            413,
            f"too many messages ({len(messages)}); the limit is {limits.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    systems: list[str] = []
    dialogue: list[Turn] = []
    for k, message in enumerate(messages):
        where = f"messages[{k}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object", param=where)
        role = message.get("role")
        text = _content(message.get("content"), f"{where}.content")
        if len(text) > limits.max_message_chars:
            raise ApiError(
                413,
                f"{where} has {len(text)} characters; the limit is {limits.max_message_chars}",
                param=f"{where}.content",
                code="message_too_long",
            )
        if role in ("system", "developer"):
            systems.append(text)
        elif role in ("user", "assistant"):
            dialogue.append(Turn(role, text))
        else:
            raise ApiError(
                400,
                f"{where}.role {str(role)[:20]!r} is not supported: use system, user or assistant",
                param=f"{where}.role",
            )
    if not dialogue or dialogue[-1].role != "user":
        raise ApiError(400, "the last non-system message must be the user's", param="messages")
    if not dialogue[-1].content.strip():
        raise ApiError(400, "the last user message is empty", param="messages")
    system = "\n\n".join(s for s in systems if s.strip()) or None
    return system, dialogue


def _content(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(400, f"{where}: only text parts are supported", param=where)
            text = part.get("text")
            if not isinstance(text, str):
                raise ApiError(400, f"{where}: a text part needs `text`", param=where)
            parts.append(text)
        return "".join(parts)
    raise ApiError(400, f"{where} must be a string or a list of text parts", param=where)


def _parse_stop(stop: Any, limits: Limits) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError(400, "`stop` must be a string or a list of strings", param="stop")
    if len(stops) > limits.max_stops:
        raise ApiError(400, f"at most {limits.max_stops} stop strings", param="stop")
    return tuple(s for s in stops if s)


def _optional(body: dict, key: str, kind: type) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise ApiError(400, f"`{key}` must be a {kind.__name__}", param=key)
    return value


def _number(body: dict, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"`{key}` must be a number", param=key)
    if not low <= value <= high:
        raise ApiError(400, f"`{key}` must be between {low:g} and {high:g}", param=key)
    return float(value)


# -- responses ---------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    usage_counts: dict[str, int],
) -> dict[str, Any]:
    """A non-streamed ``chat.completion``."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_counts,
    }


def chunk_body(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, str],
    finish_reason: str | None = None,
    usage_counts: dict[str, int] | None = None,
    *,
    choices: bool = True,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream; ``choices=False`` is the usage-only chunk."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": (
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            if choices
            else []
        ),
    }
    if usage_counts is not None:
        body["usage"] = usage_counts
    return body


def models_body(model_ids: list[str], created: int) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "lpm-local"}
            for m in model_ids
        ],
    }
