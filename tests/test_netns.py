"""Several hosts on one machine: Redis and PostgreSQL in a hub namespace, two workers in two more (each
the systemd unit's exact command line), a producer in a fourth, all over veth links. One worker's link
is cut mid-job; its lease expires and the other worker finishes the job from the chunks already stored."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import select

from schemas.db import Store, open_store
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, Worker
from tests.deploy_files import TTSFLEET, unit_command
from tests.netns import NetLab

pytestmark = [pytest.mark.slow, pytest.mark.integration]
LONG_JOB_SENTENCES = 120  # one chunk each: long enough to cut the link mid-job


class Lab:
    """The namespaces, the services in the hub, and every process started; `close` ends them all."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.net = NetLab().open()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        self.pg_dir: str | None = None
        self.store: Store | None = None

    def spawn(self, host: str, argv: list[str], env: dict[str, str], name: str,
              user: str | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")
        self.logs.append(log)
        command = self.net.exec_argv(host, ["runuser", "-u", user, "--", *argv] if user else argv)
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def urls(self, host: str, idle_in_transaction_s: int | None = None) -> dict[str, str]:
        """Broker and store URLs as `host` reaches them. `idle_in_transaction_s` shortens how long PostgreSQL
        keeps a session that went quiet inside a transaction (a worker cut off mid-commit holds the job's
        row lock until then; 30 s by default, schemas.db)."""
        hub = self.net.links[host].hub_addr
        query = ""
        if idle_in_transaction_s is not None:
            query = ("?options=-c%20statement_timeout%3D300000%20-c%20idle_in_transaction_session_timeout%3D"
                     f"{idle_in_transaction_s * 1000}")
        return {"TTSFLEET_BROKER_URL": f"redis://{hub}:6379/0",
                "TTSFLEET_DATABASE_URL": f"postgresql+psycopg://postgres@{hub}:5432/postgres{query}"}

    def start_services(self) -> None:
        self.spawn("hub", ["redis-server", "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
                           "--save", "", "--appendonly", "no"], dict(os.environ), "redis")
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins or shutil.which("runuser") is None:
            pytest.fail("PostgreSQL server binaries (initdb) and runuser are required", pytrace=False)
        pg_bin = Path(bins[-1]).parent
        self.pg_dir = tempfile.mkdtemp(prefix="ttsfleet-netns-pg-")
        shutil.chown(self.pg_dir, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(pg_bin / "initdb"), "-D", self.pg_dir, "-A", "trust",
                        "-U", "postgres", "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        with open(Path(self.pg_dir) / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")  # only reachable inside the lab's namespaces
        self.spawn("hub", [str(pg_bin / "postgres"), "-D", self.pg_dir, "-c", "listen_addresses=*", "-c",
                           f"unix_socket_directories={self.pg_dir}", "-c", "fsync=off"], dict(os.environ),
                   "postgres", user="postgres")
        self.store = _wait_for_store(self.urls("root")["TTSFLEET_DATABASE_URL"], self.tmp)

    def close(self) -> None:
        if self.store is not None:
            self.store.dispose()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for log in self.logs:
            log.close()
        self.net.close()
        if self.pg_dir:
            shutil.rmtree(self.pg_dir, ignore_errors=True)

    def tail(self) -> str:
        logs = sorted(self.tmp.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in logs)


def _wait_for_store(url: str, tmp: Path, timeout_s: float = 60) -> Store:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return open_store(url)  # migrates the fresh database to head
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        for host in ("root", "w1", "w2", "prod"):
            lab.net.add_host(host)
        lab.start_services()
        yield lab
    finally:
        lab.close()


def _workers_ready(lab: Lab, procs: list[subprocess.Popen[bytes]], timeout_s: float = 150) -> None:
    assert lab.store is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"a worker exited early:\n{lab.tail()}"
        with lab.store.read() as session:
            ready = session.scalars(select(Worker.pid).where(Worker.state == "ready")).all()
        if all(p.pid in ready for p in procs):
            time.sleep(1.5)  # registered just before Celery consumes
            return
        time.sleep(0.5)
    pytest.fail(f"workers not ready in {timeout_s} s:\n{lab.tail()}")


def _held_long_job(lab: Lab, job_id: str, timeout_s: float = 90) -> tuple[str, int]:
    """(lease owner, chunks done) once the long job runs with a few chunks stored."""
    assert lab.store is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with lab.store.read() as session:
            job = session.get(Job, job_id)
            assert job is not None and job.status != JobStatus.SUCCEEDED, "the long job ended before the cut"
            if job.status == JobStatus.RUNNING and job.lease_owner and job.chunks_done >= 3:
                return job.lease_owner, job.chunks_done
        time.sleep(0.1)
    pytest.fail(f"the long job never ran:\n{lab.tail()}")


def _wait_all_ended(lab: Lab, ids: list[str], timeout_s: float = 120) -> None:
    assert lab.store is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with lab.store.read() as session:
            statuses = session.scalars(select(Job.status).where(Job.id.in_(ids))).all()
        if all(JobStatus(s).is_terminal for s in statuses):
            return
        time.sleep(0.2)
    pytest.fail(f"jobs not done in {timeout_s} s:\n{lab.tail()}")


def test_workers_in_two_namespaces_finish_jobs_and_survive_a_cut_link(lab: Lab, tiny_vits_dir: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "audio"  # one folder both "hosts" mount, as NFS would be
    base = {**os.environ, "TTSFLEET_OUTPUT_DIR": str(out), "TTSFLEET_VOICE": str(tiny_vits_dir),
            "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    procs = {}
    for host, name in (("w1", "hostA"), ("w2", "hostB")):
        argv, unit_env = unit_command("ttsfleet-cpu-worker@.service", "1", name)
        env = {**base, **unit_env, **lab.urls(host, idle_in_transaction_s=2), "TTSFLEET_LEASE_S": "3",
               "TTSFLEET_HEARTBEAT_S": "0.5", "TTSFLEET_TOKEN_BUDGET": "1", "TTSFLEET_THREADS": "1"}
        procs[f"{name}/cpu1/"] = lab.spawn(host, argv, env, f"worker-{host}")
    _workers_ready(lab, list(procs.values()))

    jobs = tmp_path / "jobs.jsonl"
    long_text = " ".join(f"Line {n} here." for n in range(LONG_JOB_SENTENCES))
    jobs.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("A short one.", "Another short one.", long_text)))
    producer = {**base, **lab.urls("prod"), "TTSFLEET_MAX_CHUNK_CHARS": "16"}
    submitted = subprocess.run(lab.net.exec_argv("prod", [TTSFLEET, "submit", str(jobs), "--json"]), env=producer,
                               capture_output=True, text=True, timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stderr
    ids = [j["id"] for j in json.loads(submitted.stdout)]

    owner, done_at_cut = _held_long_job(lab, ids[2])
    [cut_slot] = [slot for slot in procs if owner.startswith(slot)]
    lab.net.cut("w1" if cut_slot.startswith("hostA") else "w2")

    _wait_all_ended(lab, ids)
    views = json.loads(subprocess.run(lab.net.exec_argv("prod", [TTSFLEET, "status", *ids, "--json"]), env=producer,
                                      capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [v["status"] for v in views] == ["succeeded"] * 3
    assert lab.store is not None
    with lab.store.read() as session:
        job = session.get(Job, ids[2])
        assert job is not None and job.worker_id is not None
        attempts = set(session.scalars(select(Chunk.attempt).where(Chunk.job_id == ids[2])).all())
    assert not job.worker_id.startswith(cut_slot), "the job was finished by the worker that was cut off"
    assert job.attempts >= 2 and 1 in attempts and len(attempts) >= 2, (done_at_cut, attempts)
    assert Path(views[2]["audio_path"]).is_file()
