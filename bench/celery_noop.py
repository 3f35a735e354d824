"""The bookkeeping benchmark's floor: Celery's solo pool draining no-op tasks, configured as a ttsfleet
worker is (late acknowledgement, prefetch 1, one process, events on, the same Redis transport options).
Whatever a worker does per message, it pays at least this.

    python -m bench.celery_noop BROKER_URL QUEUE COUNT    # prints tasks a second (first to last task run)
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from schemas.settings import WorkerSettings

NOOP_TASK = "bench.noop"


def app(broker_url: str, queue: str) -> Any:
    """A Celery app with a ttsfleet worker's configuration and one task that marks its run in Redis."""
    import redis

    from worker.app import make_celery

    celery = make_celery(WorkerSettings(broker_url=broker_url, queues=queue), {"task_default_queue": queue})
    client = redis.Redis.from_url(broker_url)

    @celery.task(name=NOOP_TASK)
    def noop(count: int) -> None:
        client.setnx(f"{queue}:first", time.time())
        if client.incr(f"{queue}:done") == count:
            client.set(f"{queue}:last", time.time())

    return celery


def measure(broker_url: str, queue: str, count: int, timeout_s: float = 300) -> float:
    """Publish `count` tasks, start a worker subprocess, and return its tasks a second."""
    import redis

    celery = app(broker_url, queue)
    with celery.producer_or_acquire() as producer:
        for _ in range(count):
            celery.send_task(NOOP_TASK, args=[count], queue=queue, producer=producer)
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.celery_noop:worker_app", "worker",
                               "-P", "solo", "-c", "1", "-Q", queue, "-E", "--without-gossip", "--without-mingle",
                               "-l", "WARNING"], env={**_env(), "BENCH_BROKER": broker_url, "BENCH_QUEUE": queue},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = redis.Redis.from_url(broker_url)
    try:
        deadline = time.monotonic() + timeout_s
        while client.get(f"{queue}:last") is None:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the no-op worker did not drain its queue")
            time.sleep(0.1)
        first, last = float(client.get(f"{queue}:first") or 0), float(client.get(f"{queue}:last") or 0)
        return (count - 1) / max(last - first, 1e-6)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        client.delete(f"{queue}:first", f"{queue}:last", f"{queue}:done")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _worker_app() -> Any:
    import os

    return app(os.environ["BENCH_BROKER"], os.environ["BENCH_QUEUE"])


def __getattr__(name: str) -> Any:  # `celery -A bench.celery_noop:worker_app`: built when the worker asks
    if name == "worker_app":
        return _worker_app()
    raise AttributeError(name)


if __name__ == "__main__":
    print(f"{measure(sys.argv[1], sys.argv[2], int(sys.argv[3])):.1f}")
