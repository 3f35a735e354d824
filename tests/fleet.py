"""A fleet for end-to-end tests: the `ttsfleet` CLI and `ttsfleet worker` subprocesses around one real
broker and one real SQL store; every worker it starts is killed on the way out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import select

from schemas.db import Store, open_store
from schemas.tables import Worker

TTSFLEET = str(Path(sys.executable).parent / "ttsfleet")
NOTICES = [
    {"text": "The north gate closes at 6 p.m. on Friday, March 3rd, for repairs."},
    {"text": "Water service on Elm Street stops from 9 a.m. to 1 p.m. on June 12."},
    {"text": "The council meets on 2 May 2027 at 7:30 p.m. in room 12."},
]
CHAPTER = ("It was a bright cold day in April. The clocks were striking thirteen.\n\n"
           "Winston slipped quickly through the glass doors, though not quickly enough.")


@dataclass
class Fleet:
    env: dict[str, str]
    tmp: Path
    workers: list[subprocess.Popen[bytes]]
    logs_open: list[IO[bytes]]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TTSFLEET, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def start_worker(self, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # closed at teardown
        self.logs_open.append(log)
        proc = subprocess.Popen([TTSFLEET, "worker", "--device", "cpu", "--name", "itest", *extra], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        self._wait_ready(proc)
        return proc

    def start_command(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a worker from a full command line (a deploy file's), waiting until it is ready."""
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # closed at teardown
        self.logs_open.append(log)
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.workers.append(proc)
        self._wait_ready(proc)
        return proc

    @cached_property
    def store(self) -> Store:
        return open_store(self.env["TTSFLEET_DATABASE_URL"])

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
        store = self.store
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"worker exited early:\n{self.logs()}"
            with store.session() as s:
                if s.scalar(select(Worker.id).where(Worker.pid == proc.pid, Worker.state == "ready")):
                    time.sleep(1.5)  # registered before Celery consumes; give it a moment to subscribe
                    return
            time.sleep(0.5)
        pytest.fail(f"worker not ready in {timeout_s} s:\n{self.logs()}")

    def submit(self, *args: str) -> list[str]:
        """`ttsfleet submit ARGS --json`, which must succeed; the new job ids."""
        submitted = self.cli("submit", *args, "--json")
        assert submitted.returncode == 0, submitted.stderr
        return [j["id"] for j in json.loads(submitted.stdout)]

    def wait_done(self, ids: list[str], timeout_s: int = 180) -> list[dict[str, Any]]:
        """`ttsfleet wait`, which must succeed; then the jobs as `status --json` shows them."""
        waited = self.cli("wait", *ids, "--timeout", str(timeout_s), timeout=timeout_s + 60)
        assert waited.returncode == 0, waited.stdout + waited.stderr + self.logs()
        views: list[dict[str, Any]] = json.loads(self.cli("status", *ids, "--json").stdout)
        return views

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("worker-*.log")))


@contextmanager
def running_fleet(broker_url: str, db_url: str, voice: Path | str, tmp_path: Path) -> Iterator[Fleet]:
    """CLI environment for one broker and store, jobs in `voice` (a folder, or `null:` where the test is
    about the queue, store or storage rather than speech); kills the workers it started on the way out."""
    env = {**os.environ, "TTSFLEET_BROKER_URL": broker_url, "TTSFLEET_DATABASE_URL": db_url,
           "TTSFLEET_OUTPUT_DIR": str(tmp_path / "out"), "TTSFLEET_VOICE": str(voice),
           "TTSFLEET_HEARTBEAT_S": "1", "TTSFLEET_LEASE_S": "30", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           # The fault tests stop workers mid-job: they need the tiny voice's jobs to take a while, as they do
           # on PyTorch. On ONNX Runtime (where a CPU worker would export it) a 100-chunk job takes a second.
           "TTSFLEET_RUNTIME": "torch"}
    fleet = Fleet(env=env, tmp=tmp_path, workers=[], logs_open=[])
    try:
        yield fleet
    finally:
        for proc in fleet.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for log in fleet.logs_open:
            log.close()
        fleet.store.dispose()
