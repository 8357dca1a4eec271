"""The HTTP side: Starlette routes for ``/v1/models`` and ``/v1/chat/completions``.

Every failure leaves as OpenAI's error body with its status (``errors.ApiError``), including
404/405 from routing and 401 from the key check, so a client shows the message rather than a
parse error. The request body is read with a byte cap before any JSON parsing (413 past it);
``schemas`` then caps message counts and sizes.

A request waits for the generation thread (``worker``) while watching its connection: a client
that leaves before or during its reply sets the job's ``cancel``, so the model stops within one
token and the next request starts. Streams are server-sent events in OpenAI's chunk format,
ending with ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lpm_local.server import schemas
from lpm_local.server.errors import ApiError
from lpm_local.server.service import ChatService, Outcome, Started
from lpm_local.server.worker import GenerationQueue, Job

log = logging.getLogger(__name__)

# Headers a client may send (documented in the README).
PROFILE_HEADER = "x-lpm-profile"  # whose memory; else the body's `user`; else the server's
TEMPORARY_HEADER = "x-lpm-temporary"  # "1"/"true"/"yes": not stored, not learned, no memory
# Headers the server sends back with each completion.
CONVERSATION_HEADER = "X-LPM-Conversation"
MEMORY_HEADER = "X-LPM-Memory"

POLL_S = 0.25  # how often a waiting request checks that its client is still there


@dataclass
class ServerState:
    """What the routes share."""

    service: ChatService
    queue: GenerationQueue
    limits: schemas.Limits
    started: int  # unix time, for `created` of the model list


def create_app(
    service: ChatService,
    queue: GenerationQueue,
    *,
    api_key: str | None = None,
    limits: schemas.Limits | None = None,
) -> ASGIApp:
    """The ASGI app; with ``api_key`` every request must carry ``Authorization: Bearer KEY``."""
    state = ServerState(service, queue, limits or schemas.Limits(), int(time.time()))
    app = Starlette(
        routes=[
            Route("/v1/models", _models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", _model, methods=["GET"]),
            Route("/v1/chat/completions", _chat_completions, methods=["POST"]),
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _bug},
    )
    app.state.lpm = state
    return ApiKeyCheck(app, api_key) if api_key else app


class ApiKeyCheck:
    """401 for any request without ``Authorization: Bearer <key>`` (constant-time compare)."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self._key = app, key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            error = ApiError(
                401,
                "missing or wrong API key: send `Authorization: Bearer <key>`",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await _api_error(None, error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        return False


# -- routes ------------------------------------------------------------------------------------


async def _models(request: Request) -> Response:
    state: ServerState = request.app.state.lpm
    return JSONResponse(schemas.models_body([state.service.model_id], state.started))


async def _model(request: Request) -> Response:
    state: ServerState = request.app.state.lpm
    model_id = request.path_params["model_id"]
    if model_id != state.service.model_id:
        raise _unknown_model(model_id, state)
    return JSONResponse(schemas.models_body([model_id], state.started)["data"][0])


async def _chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.lpm
    body = await _read_json(request, state.limits.max_body_bytes)
    chat = schemas.parse_chat_request(body, state.limits)
    if chat.model != state.service.model_id:
        raise _unknown_model(chat.model, state)
    name = request.headers.get(PROFILE_HEADER) or chat.user
    profile = await run_in_threadpool(state.service.resolve_profile, name)
    temporary = request.headers.get(TEMPORARY_HEADER, "").strip().lower() in ("1", "true", "yes")

    def work(job: Job) -> Outcome:
        return state.service.complete(
            chat,
            profile,
            temporary=temporary,
            cancel=job.cancel,
            on_start=lambda started: job.put("start", started),
            on_chunk=lambda text: job.put("chunk", text),
        )

    job = state.queue.submit(work, asyncio.get_running_loop())
    try:
        first = await _next_or_disconnect(job, request)
    except _ClientGone:
        return Response(status_code=499)
    if first[0] == "error":
        raise first[1]
    completion = _Completion(chat.model, temporary)
    if first[0] == "start":
        completion.started = first[1]
    if chat.stream:
        return StreamingResponse(
            _sse(job, completion, chat, pending=first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **completion.headers()},
        )
    return await _collect(job, request, completion, pending=first)


# -- completions -------------------------------------------------------------------------------


class _ClientGone(Exception):
    pass


@dataclass
class _Completion:
    model: str
    temporary: bool
    started: Started | None = None

    def __post_init__(self) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def headers(self) -> dict[str, str]:
        out = {}
        if self.started is not None:
            out[MEMORY_HEADER] = "on" if self.started.memory_used else "off"
            if self.started.conversation_id is not None and not self.temporary:
                out[CONVERSATION_HEADER] = str(self.started.conversation_id)
        return out


async def _next_or_disconnect(job: Job, request: Request) -> tuple:
    """The job's next event; cancels the job and raises ``_ClientGone`` if the client left.

    The connection is checked at least every ``POLL_S`` even while events keep coming: a reply
    that streams tokens faster than that would otherwise never notice its client is gone."""
    while True:
        now = time.monotonic()
        if now - job.checked_at >= POLL_S:
            job.checked_at = now
            if await request.is_disconnected():
                job.cancel.set()
                raise _ClientGone
        event = await job.next_event(POLL_S)
        if event is not None:
            return event


async def _collect(
    job: Job, request: Request, completion: _Completion, *, pending: tuple
) -> Response:
    """A non-streamed reply: wait for the whole of it (still watching the connection)."""
    event = pending
    try:
        while event[0] in ("start", "chunk"):
            if event[0] == "start":
                completion.started = event[1]
            event = await _next_or_disconnect(job, request)
    except _ClientGone:
        return Response(status_code=499)
    if event[0] == "error":
        raise event[1]
    outcome: Outcome = event[1]
    if outcome.cancelled:  # the client is still here, so it was the server stopping
        raise ApiError(503, "the server is shutting down", code="shutting_down")
    body = schemas.completion_body(
        completion.id,
        completion.created,
        completion.model,
        outcome.text,
        outcome.finish_reason,
        schemas.usage(outcome.prompt_tokens, outcome.completion_tokens),
    )
    return JSONResponse(body, headers=completion.headers())


async def _sse(
    job: Job, completion: _Completion, chat: schemas.ChatRequest, *, pending: tuple
) -> AsyncIterator[str]:
    """Server-sent events for a streamed reply. Starlette cancels this generator when the
    client disconnects; ``finally`` then cancels the generation."""

    def chunk(delta: dict, finish: str | None = None) -> str:
        body = schemas.chunk_body(
            completion.id, completion.created, completion.model, delta, finish
        )
        return _event(body)

    try:
        yield chunk({"role": "assistant", "content": ""})
        event = pending
        while True:
            if event is None:
                pass
            elif event[0] == "chunk":
                yield chunk({"content": event[1]})
            elif event[0] == "error":
                yield _event(event[1].body())
                break
            elif event[0] == "done":
                outcome: Outcome = event[1]
                if outcome.cancelled:
                    error = ApiError(503, "the server is shutting down", code="shutting_down")
                    yield _event(error.body())
                    break
                yield chunk({}, outcome.finish_reason)
                if chat.include_usage:
                    counts = schemas.usage(outcome.prompt_tokens, outcome.completion_tokens)
                    body = schemas.chunk_body(
                        completion.id,
                        completion.created,
                        completion.model,
                        {},
                        usage_counts=counts,
                        choices=False,
                    )
                    yield _event(body)
                break
            event = await job.next_event(POLL_S)
        yield "data: [DONE]\n\n"
    finally:
        if not job.finished:
            job.cancel.set()


def _event(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


# -- input and errors --------------------------------------------------------------------------


async def _read_json(request: Request, max_bytes: int) -> object:
    """The body as JSON, read with a byte cap (413) whatever Content-Length claims."""
    too_large = ApiError(
        413, f"the request body is over {max_bytes} bytes", code="request_too_large"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > max_bytes:
            raise too_large
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None


def _unknown_model(model_id: str, state: ServerState) -> ApiError:
    return ApiError(
        404,
        f"model {model_id[:80]!r} is not served here; this server serves "
        f"{state.service.model_id!r} (GET /v1/models)",
        param="model",
        code="model_not_found",
    )


def _api_error(request: Request | None, error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _http_error(request: Request, exc: HTTPException) -> Response:
    return _api_error(request, ApiError(exc.status_code, str(exc.detail), headers=exc.headers))


def _bug(request: Request, exc: Exception) -> Response:
    log.exception("request failed", exc_info=exc)
    return _api_error(request, ApiError(500, f"internal error: {type(exc).__name__}"))
