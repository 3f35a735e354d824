"""A bounded load test on loopback: 500 submissions offered over 30 s (one every 60 ms, 8 clients at once) to
one real uvicorn server on PostgreSQL, the production store; every job is accepted exactly once (stored once,
published once), none lost, and the server keeps up (all answered within the 30 s plus a 15 s grace)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from schemas.broker import QueueDepths
from schemas.db import open_store
from schemas.settings import ServiceSettings
from schemas.tables import Job
from service.app import create_app
from tests.service_fleet import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SUBMISSIONS = 500
OFFER_S = 30.0
GRACE_S = 15.0
QUEUE = "ttsfleet-load"  # no worker consumes it: the jobs stay queued and countable


@pytest.fixture
def server(pg_url: str, redis_url: str) -> Iterator[str]:
    import uvicorn

    settings = ServiceSettings(database_url=pg_url, broker_url=redis_url, queue=QUEUE, voice_dirs="/tmp",
                               max_queued_per_key=SUBMISSIONS + 1)
    store = open_store(pg_url)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(settings, store, webhooks=False), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=20)
    store.dispose()


def test_500_submissions_in_30_s_each_accepted_exactly_once(server: str, pg_url: str, redis_url: str) -> None:
    local = threading.local()
    clients: list[httpx.Client] = []

    def submit(n: int) -> tuple[int, str]:
        time.sleep(max(0.0, started + n * OFFER_S / SUBMISSIONS - time.monotonic()))  # the offered rate
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server, timeout=60)
            clients.append(local.client)
        response = local.client.post("/v1/jobs", json={"id": f"load-{n:03d}", "text": f"Notice number {n}."})
        return response.status_code, response.json()[0]["id"] if response.status_code == 202 else response.text

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(submit, range(SUBMISSIONS)))
    for client in clients:
        client.close()
    elapsed_s = time.monotonic() - started
    assert [code for code, _ in results] == [202] * SUBMISSIONS, [r for r in results if r[0] != 202][:3]
    assert sorted(job_id for _, job_id in results) == [f"load-{n:03d}" for n in range(SUBMISSIONS)]
    assert elapsed_s < OFFER_S + GRACE_S, f"{SUBMISSIONS} submissions took {elapsed_s:.1f} s"
    with httpx.Client(base_url=server) as client:  # a retry of one of them changes nothing
        again = client.post("/v1/jobs", json={"id": "load-007", "text": "Notice number 7."}).json()
        assert again[0]["created"] is False
    store = open_store(pg_url)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == SUBMISSIONS
    store.dispose()
    assert QueueDepths(redis_url, [QUEUE], timeout_s=5).total() == SUBMISSIONS  # published once each
    print(f"{SUBMISSIONS} submissions in {elapsed_s:.1f} s ({SUBMISSIONS / elapsed_s:.0f}/s)")
