"""Errors as OpenAI's API returns them: ``{"error": {"message", "type", "param", "code"}}``.

Clients (the ``openai`` package, front-ends) map the HTTP status to an exception class and show
``message``; so every failure the server reports is an ``ApiError`` with the status a client
expects for it (400 bad request, 401 no key, 404 unknown model or profile, 413 too large,
429 queue full, 503 shutting down, 500 a bug).
"""

from __future__ import annotations

from typing import Any

# OpenAI's ``type`` field for each status this server uses.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """A failure to report to the client with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """The JSON body, exactly OpenAI's shape."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
