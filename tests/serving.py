"""A live `lpm serve` API on a free loopback port, in a thread of the test process.

The server is the real stack (uvicorn, Starlette, the generation thread, ChatSession, the
store); only the backbone is the tiny Qwen3. ``raw`` speaks plain HTTP for what the ``openai``
client will not send (malformed JSON, oversize bodies, missing keys).
"""

from __future__ import annotations

import http.client
import json
from contextlib import contextmanager
from urllib.parse import urlparse

from lpm_local.chat.engine import ChatEngine
from lpm_local.server.run import LocalServer, ServerOptions, bind
from lpm_local.server.schemas import Limits
from lpm_local.server.service import ChatService


@contextmanager
def running_server(
    store, backbone, *, profile=None, runtime_factory=None, system_prompt=None, **options
):
    """Yields the ``LocalServer`` (``.url``, ``.service``); stops and joins it afterwards."""
    profile = profile or store.active_profile()
    service = ChatService(
        store,
        ChatEngine(backbone),
        profile,
        background_refits=False,
        runtime_factory=runtime_factory,
        system_prompt=system_prompt,
    )
    options.setdefault("limits", Limits())
    server = LocalServer(service, bind("127.0.0.1", 0), ServerOptions(**options))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        service.close()


def client(server, api_key: str = "unused", **kw):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key=api_key, max_retries=0, timeout=120, **kw)


def raw(server, method: str, path: str, body: bytes | str | dict | None = None, headers=None):
    """(status, headers, body bytes) of one plain HTTP request to the server."""
    url = urlparse(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def chat_body(model: str, text: str = "hello there", **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}
