"""The speed benchmark's whole-system contenders: jobs run one after another in one process (memory
creep), and jobs through Redis, Celery and the SQL store to `ttsfleet worker` subprocesses (queue).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contenders import Timing


@dataclass
class Memory:
    """Resident set size (bytes) after each job, and CUDA allocated bytes where there is a GPU."""

    rss: list[int] = field(default_factory=list)
    cuda: list[int] = field(default_factory=list)
    timing: Timing | None = None

    def creep(self, values: list[int], warmup: int = 10) -> int | None:
        """Growth from job `warmup` to the last one (None with too few jobs)."""
        return values[-1] - values[warmup - 1] if len(values) > warmup else None


class _MemoryProbe:
    """Reads memory after every finished job. Has the `worker.events.Listener` hooks without importing the
    worker (bench modules may import only one side; see tests/test_architecture.py)."""

    def __init__(self, device: str) -> None:
        self.device, self.memory = device, Memory()
        self.audio_s: list[float] = []
        self.finished_at: list[float] = []

    def chunk_done(self, job_id: str, done: int, total: int) -> None:
        pass

    def job_failed(self, outcome: Any) -> None:
        raise RuntimeError(f"bench job {outcome.job_id} failed: {outcome.detail}")

    def job_finished(self, outcome: Any, figures: Any) -> None:
        self.finished_at.append(time.perf_counter())
        self.audio_s.append(float(figures.audio_s))
        self.memory.rss.append(_rss_bytes())
        torch = sys.modules.get("torch")
        if self.device.startswith("cuda") and torch is not None:
            self.memory.cuda.append(int(torch.cuda.memory_allocated()))


def memory_creep(texts: list[str], workdir: Path, device: str, runtime_name: str = "auto") -> Memory:
    """`texts` as jobs through `ttsfleet run`'s pipeline in this process (fresh SQLite store; claim,
    synthesize, store, assemble, finish per job), reading memory after each job. Each job runs alone
    (`TTSFLEET_JOIN_JOBS=1`): its own engine call and cleanup, so the creep is what 100 cleanups leave
    behind (jobs run together finish during their group's call, when the arenas are at their peak). The
    timing covers jobs 2 to the last (from the first job's end), so start-up is not in it."""
    from producer.cli.embedded import run_embedded
    from schemas.messages import JobRequest
    from schemas.settings import ProducerSettings

    url, out = f"sqlite:///{workdir / 'memory.db'}", workdir / "memory-out"
    probe = _MemoryProbe(device)
    run_embedded([JobRequest(text=text) for text in texts], ProducerSettings(database_url=url, output_dir=out),
                 {"TTSFLEET_DEVICE": device, "TTSFLEET_JOIN_JOBS": "1"}, device=device, precision=None, force=True,
                 show_progress=False, quiet=True, inference_runtime=runtime_name, listeners=[probe])
    if len(probe.finished_at) > 1:
        probe.memory.timing = Timing(sum(probe.audio_s[1:]), probe.finished_at[-1] - probe.finished_at[0],
                                     len(probe.audio_s) - 1)
    return probe.memory


def memory_creep_process(workdir: Path, env: dict[str, str], device: str, runtime_name: str = "auto") -> Memory:
    """`memory_creep` on the 100 notices in a fresh process (`python -m bench.fleet`), so the figures are
    those of a process that runs only jobs, as a worker does: nothing the benchmark loaded before (the
    naive loop's torch model) sits in its heap."""
    done = subprocess.run([sys.executable, "-m", "bench.fleet", str(workdir), device, runtime_name], env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory benchmark failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    timing = Timing(*report["timing"]) if report["timing"] else None
    return Memory(rss=report["rss"], cuda=report["cuda"], timing=timing)


def queue(texts: list[str], workdir: Path, env: dict[str, str], *, workers: int, threads: int | None,
          broker_url: str, device: str) -> Timing:
    """Start `workers` worker subprocesses (each `--threads threads`) on a queue of their own, wait until
    they are ready, then submit `texts` (one job each) through the broker and time submit -> last job done.
    Workers and their queue are private to this call; the store is a fresh SQLite file."""
    from producer.submit import submit
    from schemas.broker import Publisher
    from schemas.db import open_store
    from schemas.messages import JobRequest
    from schemas.settings import ProducerSettings

    tag = uuid.uuid4().hex[:8]
    url, out = f"sqlite:///{workdir / f'queue-{tag}.db'}", workdir / f"queue-{tag}"
    store = open_store(url)
    worker_env = {**env, "TTSFLEET_BROKER_URL": broker_url, "TTSFLEET_DATABASE_URL": url,
                  "TTSFLEET_OUTPUT_DIR": str(out), "TTSFLEET_QUEUES": f"bench-{tag}", "TTSFLEET_DEVICE": device}
    extra = ["--threads", str(threads)] if threads else []
    procs = [subprocess.Popen([sys.executable, "-m", "producer.cli", "worker", "--name", f"bench-{tag}-{n}",
                               "--loglevel", "WARNING", *extra], env=worker_env, stdout=subprocess.DEVNULL,
                              stderr=open(workdir / f"worker-{tag}-{n}.log", "wb"), start_new_session=True)
             for n in range(workers)]
    try:
        _wait_ready(store, procs)
        settings = ProducerSettings(database_url=url, output_dir=out, broker_url=broker_url, queue=f"bench-{tag}")
        publisher = Publisher(broker_url, f"bench-{tag}")
        started = time.perf_counter()
        try:
            jobs = submit([JobRequest(text=text) for text in texts], settings, store, publisher=publisher, force=True)
        finally:
            publisher.close()
        ids = [job.id for job in jobs]
        _wait_done(store, ids, procs)
        wall = time.perf_counter() - started
        return Timing(_audio_seconds(store, ids), wall, len(ids))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(store: Any, procs: list[subprocess.Popen[bytes]], timeout_s: float = 300) -> None:
    from sqlalchemy import func, select

    from schemas.tables import Worker

    pids = [proc.pid for proc in procs]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            raise RuntimeError("a bench worker exited during start-up (see its log in the bench folder)")
        with store.read() as session:
            ready = session.scalar(select(func.count()).select_from(Worker).where(
                Worker.pid.in_(pids), Worker.state == "ready"))
        if ready == len(procs):
            time.sleep(1.5)  # registered just before Celery subscribes to the queue
            return
        time.sleep(0.3)
    raise RuntimeError(f"bench workers not ready in {timeout_s:.0f} s")


def _wait_done(store: Any, ids: list[str], procs: list[subprocess.Popen[bytes]], timeout_s: float = 1800) -> None:
    from sqlalchemy import func, select

    from producer.jobs import job_views
    from schemas.status import JobStatus
    from schemas.tables import Job

    # One COUNT per poll (not every job's view): the poller shares the cores with the workers it times.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with store.read() as session:
            open_jobs = session.scalar(select(func.count()).select_from(Job).where(
                Job.id.in_(ids), Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])))
        if not open_jobs:
            failed = [view for view in job_views(store, ids) if view.status != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} bench jobs did not succeed: {failed[0].error}")
            return
        if all(proc.poll() is not None for proc in procs):
            raise RuntimeError("every bench worker exited before the jobs were done")
        time.sleep(0.1)
    raise RuntimeError(f"bench jobs not done in {timeout_s:.0f} s")


def _audio_seconds(store: Any, ids: list[str]) -> float:
    """Seconds of synthesized speech in the jobs' chunks (without the pauses assembly adds between them,
    so it is the same measure as the engine's and Piper's sample counts)."""
    from sqlalchemy import func, select

    from schemas.tables import Chunk

    with store.read() as session:
        return float(session.scalar(select(func.coalesce(func.sum(Chunk.audio_s), 0.0)).where(Chunk.job_id.in_(ids))))


def _rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            match = re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return 0
    return int(match[1]) * 1024 if match else 0


if __name__ == "__main__":  # python -m bench.fleet WORKDIR DEVICE RUNTIME: memory over the 100 notices
    from bench.inputs import notice_texts

    measured = memory_creep(notice_texts(), Path(sys.argv[1]), sys.argv[2], sys.argv[3])
    timing = measured.timing
    print(json.dumps({"rss": measured.rss, "cuda": measured.cuda,
                      "timing": [timing.audio_s, timing.wall_s, timing.items] if timing else None}))
