"""`lpm serve` as a command: where it may listen, its startup line, and a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpm_local.cli import main
from lpm_local.storage.instance import InstanceLock
from lpm_local.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0: only loopback is allowed"),
        (["--host", "192.168.1.20", "--allow-remote"], "needs an API key"),
        (["--host", "my-laptop.local"], "refusing to listen on my-laptop.local"),
    ],
)
def test_a_non_loopback_bind_needs_the_flag_and_a_key(args, message, monkeypatch):
    monkeypatch.delenv("LPM_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_settings_file_can_hold_the_api_key(monkeypatch):
    from lpm_local.settings import save_setting

    monkeypatch.delenv("LPM_API_KEY", raising=False)
    save_setting("server_api_key", "s3cret-key")
    # The key check passes; binding an address this machine does not have then fails, in one
    # line, before any model load (no packet leaves the machine).
    result = CliRunner().invoke(main, ["serve", "--host", "192.0.2.7", "--allow-remote"])
    assert result.exit_code == 2 and "needs an API key" not in result.output
    assert "cannot listen on 192.0.2.7" in result.output


def test_a_busy_port_is_one_line_before_any_model_load():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output


@pytest.mark.slow  # a fresh interpreter loading torch: ~90 s on the shared test machine
def test_serve_starts_answers_and_stops_cleanly_on_ctrl_c(tiny_qwen3_dir, lpm_home):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LPM_HOME": str(lpm_home)}
    env.pop("LPM_API_KEY", None)
    cmd = [sys.executable, "-m", "lpm_local.cli", "serve", "--model", str(tiny_qwen3_dir)]
    proc = subprocess.Popen(
        [*cmd, "--quantize", "none", "--port", "0", "--api-key", "k3y"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                break
        startup = lines[-1]
        assert re.search(
            r"http://127\.0\.0\.1:\d+/v1 · model .*tiny-qwen3.* · profile default", startup
        )
        assert "memory on" in startup and "API key required" in startup
        url = re.search(r"(http://\S+/v1)", startup).group(1)
        rest: list[str] = []
        threading.Thread(target=lambda: rest.extend(proc.stderr), daemon=True).start()

        from openai import OpenAI

        api = OpenAI(base_url=url, api_key="k3y", max_retries=0, timeout=60)
        model = api.models.list().data[0].id
        stream = api.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "tell me a long story"}],
            max_tokens=4000,
            stream=True,
        )
        next(iter(stream)), next(iter(stream))  # generating now
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        stream.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any("lpm serve: stopped" in line for line in rest)
    # Nothing half-written: the database is sound, the turn is whole, the data dir is free.
    with Store.open() as store:
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (conversation,) = store.list_conversations(store.active_profile().id)
        assert [m.role for m in store.messages(conversation.id)] == ["user", "assistant"]
    with InstanceLock():
        pass


def test_a_stop_signal_cancels_the_reply_and_refuses_new_requests(store, tiny_backbone):
    """What Ctrl-C does, in-process: uvicorn's signal handler is ``handle_exit``."""
    from openai import APIError, OpenAI
    from serving import running_server

    with running_server(store, tiny_backbone) as server:
        api = OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)
        stream = api.chat.completions.create(
            model=server.service.model_id,
            messages=[{"role": "user", "content": "tell me a long story"}],
            max_tokens=4000,
            stream=True,
        )
        chunks = iter(stream)
        next(chunks), next(chunks)  # generating now
        server._server.handle_exit(signal.SIGINT, None)
        with pytest.raises(APIError, match="shutting down"):
            for _ in chunks:
                pass
        assert server.service.engine.last_stats.cancelled
    (conversation,) = store.list_conversations(store.active_profile().id)
    assert [m.role for m in store.messages(conversation.id)] == ["user", "assistant"]
