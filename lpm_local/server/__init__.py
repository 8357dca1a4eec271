"""``lpm serve``: the assistant and its memory behind an OpenAI-compatible HTTP API.

- ``errors``: the OpenAI error shape and the status code of each failure.
- ``schemas``: request parsing, validation and size caps; response and chunk bodies.
- ``conversations``: which stored conversation a request continues.
- ``service``: one request end to end (profile, memory, ChatSession) on the worker thread.
- ``worker``: the single generation thread and its bounded queue.
- ``app``: the Starlette routes, authentication and body limits.
- ``run``: binding, the startup line, uvicorn, clean shutdown.
- ``loadtest``: a reproducible load run against a live server.
"""
