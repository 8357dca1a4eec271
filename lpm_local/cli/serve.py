"""`lpm serve`: the assistant and its memory behind an OpenAI-compatible API on this machine."""

from __future__ import annotations

import signal

import click

from lpm_local.cli.base import finish_progress_line, stderr_progress
from lpm_local.cli.chatting import model_option, quantize_option

API_KEY_ENV = "LPM_API_KEY"


def settings_api_key() -> str | None:
    """The API key kept in lpm's settings, if any: the one place a settings file plugs in.

    Used when neither ``--api-key`` nor ``LPM_API_KEY`` gives one."""
    from lpm_local.settings import load_settings

    return load_settings().server_api_key or None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8088, show_default=True, help="0: any free."
)
@model_option
@quantize_option
@click.option("--profile", default=None, help="Profile whose memory requests use by default.")
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    default=None,
    help=f"Require `Authorization: Bearer KEY` on every request (or set {API_KEY_ENV}).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host (needs an API key too).",
)
@click.option(
    "--queue",
    "max_waiting",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Requests that may wait for the model before new ones get 429.",
)
def serve(
    host: str,
    port: int,
    model: str | None,
    quantize: str | None,
    profile: str | None,
    api_key: str | None,
    allow_remote: bool,
    max_waiting: int,
) -> None:
    """Serve an OpenAI-compatible API (/v1/chat/completions) backed by your memory.

    Point any OpenAI-compatible front-end at the printed URL. Requests use the memory of
    --profile (default: the active one), or of the profile named by the `X-LPM-Profile` header
    or the request's `user` field; `X-LPM-Temporary: 1` makes a request a temporary chat.
    Ctrl-C stops it.
    """
    from lpm_local.server.run import ServerOptions, bind, check_bind
    from lpm_local.storage.instance import InstanceLock

    api_key = api_key or settings_api_key()
    check_bind(host, allow_remote=allow_remote, api_key=api_key)
    with InstanceLock():
        sock = bind(host, port)  # a busy port fails now, not after the model load
        try:
            _serve(sock, model, quantize, profile, ServerOptions(api_key, max_waiting))
        finally:
            sock.close()


def _serve(sock, model, quantize, profile_name, options) -> None:
    from lpm_local.backbones.loader import load_backbone
    from lpm_local.chat.engine import ChatEngine
    from lpm_local.server.run import LocalServer
    from lpm_local.server.service import ChatService
    from lpm_local.settings import load_settings
    from lpm_local.storage.store import Store

    settings = load_settings()  # the default model and the system prompt, as the chat uses
    with Store.open() as store:
        profile = store.get_profile(profile_name) if profile_name else store.active_profile()
        backbone = load_backbone(
            model or settings.model or None, quantize=quantize, progress=stderr_progress()
        )
        finish_progress_line()
        service = ChatService(
            store, ChatEngine(backbone), profile, system_prompt=settings.system_prompt
        )
        try:
            service.memory_for(profile)  # open the default memory now, not on the first request
            server = LocalServer(service, sock, options)
            memory = "on" if store.get_profile_by_id(profile.id).memory_enabled else "off"
            key = "API key required" if options.api_key else "no API key (loopback only)"
            click.echo(
                f"lpm serve: listening on {server.url} · model {backbone.name} · "
                f"profile {profile.name} · memory {memory} · {key}. Ctrl-C stops.",
                err=True,
            )
            _until_stopped(server)
        finally:
            service.close()
    click.echo("lpm serve: stopped", err=True)


def _until_stopped(server) -> None:
    """Serve until Ctrl-C or SIGTERM, either of which is the normal way to stop a server.

    uvicorn shuts down gracefully on the signal, then raises it again once its own handler is
    gone; SIGTERM's default action would end the process before the memory's refits are joined
    and the store closed, so here it becomes a KeyboardInterrupt like Ctrl-C, caught below.
    """

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


COMMANDS = [serve]
