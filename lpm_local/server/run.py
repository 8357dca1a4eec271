"""Running the server: where it may listen, the startup line, uvicorn, and a clean stop.

Safe by default: it listens on loopback. Any other address needs ``allow_remote`` *and* an API
key, because the API hands out the user's memory and stores what it is sent. The socket is bound
here, before uvicorn starts, so a busy port is one clear error and port 0 (any free port) can be
reported in the startup line.

Ctrl-C (or SIGTERM) stops taking requests, cancels the reply being generated (it is stored as
far as it got, like a reply stopped in the chat), answers waiting requests with 503, lets uvicorn
close its connections, then joins the generation thread and each profile's refit (a refit that
is cancelled commits nothing). Every store write is one transaction, so nothing is half-written.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass

import uvicorn

from lpm_local.errors import BadInput
from lpm_local.server import schemas
from lpm_local.server.app import create_app
from lpm_local.server.service import ChatService
from lpm_local.server.worker import GenerationQueue

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088
GRACEFUL_S = 5  # how long open connections may take to finish once stopping


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a hostname is not resolved (a name that
    points elsewhere would widen the bind), so any other name counts as remote."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, allow_remote: bool, api_key: str | None) -> None:
    """Refuse a non-loopback bind without the explicit flag and a key (``BadInput``)."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise BadInput(
            f"refusing to listen on {host}: only loopback is allowed by default",
            hint="pass --allow-remote and an API key (--api-key or LPM_API_KEY) to serve "
            "other machines",
        )
    if not api_key:
        raise BadInput(
            f"listening on {host} needs an API key, so other machines cannot use your memory",
            hint="pass --api-key KEY or set LPM_API_KEY",
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port); a busy port is ``BadInput``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except OSError as exc:
        raise BadInput(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port (0 picks a free one)",
        ) from None


@dataclass
class ServerOptions:
    api_key: str | None = None
    max_waiting: int = 32
    limits: schemas.Limits = schemas.Limits()


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, which also cancels generation the moment a stop is asked for."""

    def __init__(self, config: uvicorn.Config, queue: GenerationQueue):
        super().__init__(config)
        self._generation = queue

    def handle_exit(self, sig, frame) -> None:
        self._generation.shutdown()  # never blocks: safe inside a signal handler
        super().handle_exit(sig, frame)


class LocalServer:
    """The API on a bound socket: ``serve()`` blocks (the CLI), ``start()`` runs it in a thread
    (tests, benchmarks); ``stop()`` ends either and joins the generation thread."""

    def __init__(self, service: ChatService, sock: socket.socket, options: ServerOptions):
        self.service, self.sock = service, sock
        self.queue = GenerationQueue(options.max_waiting)
        app = create_app(service, self.queue, api_key=options.api_key, limits=options.limits)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_S,
        )
        self._server = _Uvicorn(config, self.queue)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API's base URL (what clients take as ``base_url``)."""
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/v1"

    def serve(self) -> None:
        """Serve until Ctrl-C/SIGTERM (or ``stop``), then finish cleanly."""
        try:
            self._server.run(sockets=[self.sock])
        finally:
            self.queue.close()
            self.sock.close()

    def start(self) -> str:
        """Serve in a background thread; returns the URL once it accepts connections."""
        self._thread = threading.Thread(target=self.serve, name="lpm-serve", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread ended before it started")
            self._thread.join(0.02)
        return self.url

    def stop(self) -> None:
        self.queue.shutdown()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
