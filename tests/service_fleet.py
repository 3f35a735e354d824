"""A running `ttsfleet serve` subprocess beside a real worker, Redis and SQL store, for the HTTP tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet import TTSFLEET, Fleet, running_fleet

WEBHOOK_SECRET = "test-webhook-secret-not-for-production"
# Tests send callbacks only to receivers on loopback, which the service refuses unless told to allow it.
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"


class Receiver:
    """A webhook receiver on loopback that answers 500 to the first `fail_first` POSTs, then 200, each after
    `delay_s`; `calls` holds (status, headers, body) of every POST."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[int, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay_s)
                with receiver._lock:
                    status = 500 if len(receiver.calls) < fail_first else 200
                    receiver.calls.append((status, dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    fleet: Fleet
    base_url: str
    key: str
    key_id: str
    proc: subprocess.Popen[bytes]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"},
                            timeout=60, **kwargs)

    def wait_job(self, job_id: str, until: str = "succeeded", timeout_s: float = 120) -> dict[str, Any]:
        with self.client() as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] == until:
                    return job
                assert job["status"] in ("queued", "running"), job
                time.sleep(0.2)
        pytest.fail(f"job {job_id} not {until} in {timeout_s} s:\n{self.logs()}")

    def logs(self) -> str:
        return (self.fleet.tmp / "serve.log").read_text(errors="replace")[-3000:] + self.fleet.logs()


@contextmanager
def serve_process(env: dict[str, str], tmp: Path, *args: str, log_name: str = "serve.log"
                  ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One `ttsfleet serve` subprocess on a free loopback port with `env`; yields it and its base URL once
    `/readyz` answers, and stops it (SIGTERM, then SIGKILL) on the way out."""
    port = free_port()
    log = open(tmp / log_name, "wb")
    proc = subprocess.Popen([TTSFLEET, "serve", "--port", str(port), *args], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, base_url, lambda: (tmp / log_name).read_text(errors="replace")[-3000:])
        yield proc, base_url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log.close()


@contextmanager
def running_service(redis_url: str, db_url: str, voice_dir: Path, tmp: Path, **env: str) -> Iterator[Service]:
    """One worker and one `serve` (API keys required, webhooks signed with WEBHOOK_SECRET, callbacks to
    loopback receivers allowed)."""
    with running_fleet(redis_url, db_url, voice_dir, tmp) as fleet:
        fleet.env.update({"TTSFLEET_WEBHOOK_SECRET": WEBHOOK_SECRET, "TTSFLEET_WEBHOOK_POLL_S": "0.2",
                          "TTSFLEET_WEBHOOK_BACKOFF_S": "0.2", "TTSFLEET_SPEECH_TIMEOUT_S": "60",
                          "TTSFLEET_CALLBACK_ALLOW_NETWORKS": LOOPBACK_NETWORKS, **env})
        created = fleet.cli("keys", "create", "tests", "--json")
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        fleet.start_worker()
        with serve_process(fleet.env, tmp, "--require-api-keys") as (proc, base_url):
            yield Service(fleet, base_url, key["key"], key["id"], proc)


def _wait_up(proc: subprocess.Popen[bytes], base_url: str, logs: Callable[[], str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited early:\n{logs()}"
        try:
            if httpx.get(base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"serve not ready in {timeout_s} s:\n{logs()}")
