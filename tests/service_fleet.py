"""A running `ttsfleet serve` subprocess beside a real worker, Redis and SQL store, for the HTTP tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet import TTSFLEET, Fleet, running_fleet

WEBHOOK_SECRET = "test-webhook-secret-not-for-production"


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
def running_service(redis_url: str, db_url: str, voice_dir: Path, tmp: Path, **env: str) -> Iterator[Service]:
    """One worker and one `serve` (API keys required, webhooks signed with WEBHOOK_SECRET)."""
    with running_fleet(redis_url, db_url, voice_dir, tmp) as fleet:
        fleet.env.update({"TTSFLEET_WEBHOOK_SECRET": WEBHOOK_SECRET, "TTSFLEET_WEBHOOK_POLL_S": "0.2",
                          "TTSFLEET_WEBHOOK_BACKOFF_S": "0.2", "TTSFLEET_SPEECH_TIMEOUT_S": "60", **env})
        created = fleet.cli("keys", "create", "tests", "--json")
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        fleet.start_worker()
        port = free_port()
        log = open(tmp / "serve.log", "wb")
        proc = subprocess.Popen([TTSFLEET, "serve", "--port", str(port), "--require-api-keys"], env=fleet.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        service = Service(fleet, f"http://127.0.0.1:{port}", key["key"], key["id"], proc)
        try:
            _wait_up(service)
            yield service
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)
            log.close()


def _wait_up(service: Service, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert service.proc.poll() is None, f"serve exited early:\n{service.logs()}"
        try:
            if httpx.get(service.base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"serve not ready in {timeout_s} s:\n{service.logs()}")
