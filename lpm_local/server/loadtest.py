"""A reproducible measurement of `lpm serve`: latency through the API against in-process, and a
bounded load run. ``python -m lpm_local.server.loadtest --model smollm2-135m``.

1. Starts ``lpm serve`` as a child process on a free loopback port, in a throwaway data dir
   (``LPM_HOME``; the user's data is never touched), and samples its resident memory.
2. **API latency**: each prompt streamed once (after a warm-up): time to the first content
   chunk and decode tokens/s, measured by the client.
3. **Load**: ``clients`` threads x ``requests`` non-streamed requests each, all at once;
   answered, errors by status, p50/p95 latency, the server's peak RSS.
4. Stops the server (SIGINT, as Ctrl-C) and runs the same prompts **in-process** through
   ``ChatSession`` (what `lpm ask` does), timed the same way.

Requests are temporary chats by default (``X-LPM-Temporary``), so a run measures serving, not
a history growing under it; ``--stored`` stores and learns from them instead.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

PROMPTS = [
    "What is a good way to start learning the piano?",
    "Give me three ideas for a quick vegetarian dinner.",
    "Explain what a Python generator is in two sentences.",
    "How do I keep basil alive on a windowsill?",
    "Suggest a name for a small black cat.",
]


@dataclass
class Timing:
    ttft_s: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "ttft_s_median": _median(self.ttft_s),
            "tokens_per_s_median": _median(self.tokens_per_s),
            "n": len(self.ttft_s),
        }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 4)


class Server:
    """``lpm serve`` as a child process, with its peak RSS sampled in a thread."""

    def __init__(self, model: str, home: Path, extra: list[str]):
        env = {**os.environ, "LPM_HOME": str(home)}
        env.pop("LPM_API_KEY", None)
        cmd = [sys.executable, "-m", "lpm_local.cli", "serve", "--model", model, "--port", "0"]
        self.proc = subprocess.Popen([*cmd, *extra], env=env, stderr=subprocess.PIPE, text=True)
        self.url = None
        for line in self.proc.stderr:
            if "listening on" in line:
                self.url = line.split("listening on ", 1)[1].split(" ", 1)[0]
                break
        if self.url is None:
            raise SystemExit(f"lpm serve did not start (exit {self.proc.wait()})")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        import psutil

        process = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=120)


def _post(url: str, body: dict, headers: dict) -> http.client.HTTPResponse:
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    data = json.dumps(body).encode()
    conn.request("POST", "/v1/chat/completions", body=data, headers=headers)
    return conn.getresponse()


def api_timing(url: str, model: str, prompts: list[str], max_tokens: int, headers: dict) -> Timing:
    """TTFT and decode tokens/s of streamed requests, measured by the client."""
    timing = Timing()
    for k, prompt in enumerate([prompts[0], *prompts]):  # the first is a warm-up
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        start = time.perf_counter()
        response = _post(url, body, headers)
        first = last = None
        tokens = 0
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if choice["delta"].get("content"):
                    last = time.perf_counter()
                    first = first or last
        if k and first is not None:
            timing.ttft_s.append(first - start)
            if tokens > 1 and last > first:
                timing.tokens_per_s.append((tokens - 1) / (last - first))
    return timing


def load_run(
    url: str, model: str, clients: int, requests: int, max_tokens: int, headers: dict
) -> dict:
    """``clients`` threads each sending ``requests`` non-streamed requests back to back."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    go = threading.Barrier(clients)

    def client(k: int) -> None:
        go.wait()
        for r in range(requests):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"{PROMPTS[(k + r) % len(PROMPTS)]}"}],
                "max_tokens": max_tokens,
            }
            start = time.perf_counter()
            try:
                response = _post(url, body, headers)
                response.read()
                status = response.status
            except OSError as exc:
                status = type(exc).__name__
            with lock:
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "clients": clients,
        "requests_each": requests,
        "answered": len(latencies),
        "errors": errors,
        "p50_s": _percentile(latencies, 0.50),
        "p95_s": _percentile(latencies, 0.95),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def in_process_timing(model: str, prompts: list[str], max_tokens: int) -> Timing:
    """The same prompts through ``ChatSession`` in this process (`lpm ask`'s path)."""
    from lpm_local.backbones.loader import load_backbone
    from lpm_local.chat.engine import ChatEngine
    from lpm_local.chat.session import ChatSession

    engine = ChatEngine(load_backbone(model))
    timing = Timing()
    for k, prompt in enumerate([prompts[0], *prompts]):
        session = ChatSession(engine=engine, temporary=True)
        start, first = time.perf_counter(), None
        for _ in session.send(prompt, max_new_tokens=max_tokens):
            first = first or time.perf_counter()
        stats = engine.last_stats
        if k and first is not None:
            timing.ttft_s.append(first - start)
            if stats.decode_tokens_per_s:
                timing.tokens_per_s.append(stats.decode_tokens_per_s)
    return timing


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--load-max-tokens", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64, help="for the latency runs")
    parser.add_argument("--stored", action="store_true", help="store and learn from requests")
    parser.add_argument("--queue", type=int, default=32)
    args = parser.parse_args(argv)
    headers = {"Content-Type": "application/json"}
    if not args.stored:
        headers["X-LPM-Temporary"] = "1"
    with tempfile.TemporaryDirectory(prefix="lpm-loadtest-") as home:
        os.environ["LPM_HOME"] = home  # the in-process run too
        server = Server(args.model, Path(home), ["--queue", str(args.queue)])
        try:
            model_id = json.loads(_get(server.url + "/models"))["data"][0]["id"]
            api = api_timing(server.url, model_id, PROMPTS, args.max_tokens, headers)
            load = load_run(
                server.url, model_id, args.clients, args.requests, args.load_max_tokens, headers
            )
        finally:
            exit_code = server.stop()
        load["server_peak_rss_mb"] = round(server.peak_rss / 2**20, 1)
        load["server_exit_code"] = exit_code
        local = in_process_timing(args.model, PROMPTS, args.max_tokens)
    report = {
        "model": args.model,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "api": api.summary(),
        "in_process": local.summary(),
        "load": load,
    }
    print(json.dumps(report, indent=2))
    return report


def _get(url: str) -> bytes:
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    conn.request("GET", parsed.path)
    return conn.getresponse().read()


if __name__ == "__main__":
    main()
