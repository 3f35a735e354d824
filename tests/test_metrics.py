"""A worker's Prometheus endpoint answers over HTTP with real counts and the real Redis queue depth."""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from schemas.broker import transport_options
from schemas.status import Backend, DType, JobStatus
from worker.events import JobFigures, JobOutcome, Listener, Listeners
from worker.metrics import CELERY_EVENT_SETTINGS, MetricsListener, WorkerMetrics, worker_info


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        body = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


@pytest.fixture
def metrics(redis_url: str) -> Iterator[WorkerMetrics]:
    served = WorkerMetrics(broker_url=redis_url, queues="ttsfleet-test, other",
                           info={"worker": "w1", "card": "cpu", "dtype": "float32"})
    yield served
    served.close()


def test_endpoint_reports_jobs_chunks_audio_memory_and_queue_depth(metrics: WorkerMetrics, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush("ttsfleet-test", "a", "b", "c")
    # A priority-6 message, stored as kombu does with ttsfleet's transport options (sep ":").
    client.rpush(f"ttsfleet-test{transport_options()['sep']}6", "d")
    client.rpush("other", "e")
    port = metrics.serve(0)
    assert port > 0

    metrics.chunk_done()
    metrics.chunk_done(2)
    metrics.job_finished("succeeded", audio_s=12.5, synth_s=0.8, chunks=3)
    metrics.job_finished("succeeded", audio_s=7.5, synth_s=40.0, chunks=1)
    metrics.job_finished("failed", audio_s=0.0, synth_s=3.0, chunks=0)
    metrics.set_peak_memory(3 << 30)
    got = _scrape(port)

    assert got[("ttsfleet_jobs_total", (("status", "succeeded"),))] == 2
    assert got[("ttsfleet_jobs_total", (("status", "failed"),))] == 1
    assert got[("ttsfleet_chunks_total", ())] == 3
    assert got[("ttsfleet_audio_seconds_total", ())] == pytest.approx(20.0)
    assert got[("ttsfleet_job_synthesis_seconds_count", ())] == 2
    assert got[("ttsfleet_job_synthesis_seconds_sum", ())] == pytest.approx(40.8)
    assert got[("ttsfleet_job_synthesis_seconds_bucket", (("le", "1.0"),))] == 1
    assert got[("ttsfleet_job_synthesis_seconds_bucket", (("le", "60.0"),))] == 2
    assert got[("ttsfleet_job_chunks_sum", ())] == 4
    assert got[("ttsfleet_peak_memory_bytes", ())] == 3 << 30
    assert got[("ttsfleet_queue_depth", (("queue", "ttsfleet-test"),))] == 4
    assert got[("ttsfleet_queue_depth", (("queue", "other"),))] == 1
    assert got[("ttsfleet_broker_up", ())] == 1
    assert got[("ttsfleet_worker_info", (("card", "cpu"), ("dtype", "float32"), ("worker", "w1")))] == 1

    client.lpop("ttsfleet-test")
    assert _scrape(port)[("ttsfleet_queue_depth", (("queue", "ttsfleet-test"),))] == 3  # read at scrape time
    client.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_scrape_answers_when_the_broker_is_down() -> None:
    metrics = WorkerMetrics(broker_url=f"redis://127.0.0.1:{_closed_port()}/0")
    port = metrics.serve(0)
    try:
        metrics.set_peak_memory(None)
        got = _scrape(port)
        assert got[("ttsfleet_broker_up", ())] == 0
        assert not any(name == "ttsfleet_queue_depth" for name, _ in got)
        assert math.isnan(got[("ttsfleet_peak_memory_bytes", ())])
    finally:
        metrics.close()


def test_two_workers_in_one_process_do_not_share_counters() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first_port, second_port = first.serve(0), second.serve(0)
    try:
        first.job_finished("succeeded", audio_s=1.0, synth_s=1.0, chunks=1)
        assert _scrape(first_port)[("ttsfleet_jobs_total", (("status", "succeeded"),))] == 1
        assert ("ttsfleet_jobs_total", (("status", "succeeded"),)) not in _scrape(second_port)
    finally:
        first.close()
        second.close()


def test_celery_event_settings_are_real_celery_settings() -> None:
    from celery import Celery
    from celery.app.defaults import DEFAULTS

    assert set(CELERY_EVENT_SETTINGS) <= set(DEFAULTS)
    app = Celery("ttsfleet-test", set_as_current=False)
    app.conf.update(CELERY_EVENT_SETTINGS)
    assert app.conf.worker_send_task_events is True and app.conf.task_send_sent_event is True


def test_the_metrics_listener_counts_a_runtimes_jobs_next_to_other_listeners(redis_url: str) -> None:
    seen: list[Any] = []

    class Recorder(Listener):
        def chunk_done(self, job_id: str, done: int, total: int) -> None:
            seen.append(("chunk", job_id, done, total))

    row = {"id": "host/cpu/1", "host": "host", "card": "cpu", "capability": None, "backend": "cpu",
           "dtype": "float32", "tf32": False}
    metrics = WorkerMetrics(broker_url=redis_url, queues="ttsfleet", info=worker_info(row))
    listeners = Listeners([MetricsListener(metrics), Recorder()])
    figures = JobFigures(card="cpu", capability=None, backend=Backend.CPU, dtype=DType.FLOAT32, chunks=2,
                         audio_s=3.0, synth_s=0.5, peak_mem_bytes=None, oom_retries=0, fp32_fallbacks=0, batches=1)
    port = metrics.serve(0)
    try:
        listeners.chunk_done("j1", 1, 2)
        listeners.chunk_done("j1", 2, 2)
        listeners.job_finished(JobOutcome("j1", JobStatus.SUCCEEDED), figures)
        listeners.job_failed(JobOutcome("j2", JobStatus.FAILED, "poison"))
        got = _scrape(port)
    finally:
        metrics.close()
    assert seen == [("chunk", "j1", 1, 2), ("chunk", "j1", 2, 2)]
    assert got[("ttsfleet_chunks_total", ())] == 2
    assert got[("ttsfleet_jobs_total", (("status", "succeeded"),))] == 1
    assert got[("ttsfleet_jobs_total", (("status", "failed"),))] == 1
    assert got[("ttsfleet_audio_seconds_total", ())] == 3.0
    assert got[("ttsfleet_job_chunks_sum", ())] == 2
    assert got[("ttsfleet_queue_depth", (("queue", "ttsfleet"),))] == 0
    assert got[("ttsfleet_worker_info", (("backend", "cpu"), ("capability", "None"), ("card", "cpu"),
                                         ("dtype", "float32"), ("host", "host"), ("id", "host/cpu/1"),
                                         ("tf32", "False")))] == 1


def test_a_failing_listener_is_logged_and_never_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    class Broken(Listener):
        def chunk_done(self, job_id: str, done: int, total: int) -> None:
            raise RuntimeError("listener bug")

    class Recorder(Listener):
        def chunk_done(self, job_id: str, done: int, total: int) -> None:
            seen.append(job_id)

    Listeners([Broken(), Recorder()]).chunk_done("j1", 1, 1)
    assert seen == ["j1"]
    assert "listener bug" in caplog.text


def test_a_celery_worker_with_these_settings_sends_the_events_flower_reads(redis_url: str) -> None:
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    app = Celery("ttsfleet-events-test", broker=redis_url, set_as_current=False)
    app.conf.update(CELERY_EVENT_SETTINGS, task_ignore_result=True, broker_connection_retry_on_startup=True)

    @app.task(name="ttsfleet_test.add")
    def add(a: int, b: int) -> int:
        return a + b

    events: list[dict[str, Any]] = []
    listening = threading.Event()
    receivers: list[Any] = []

    def listen() -> None:  # what Flower does: capture every event from the broker
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": events.append})
            receivers.append(receiver)
            listening.set()
            with contextlib.suppress(socket.timeout, TimeoutError):
                receiver.capture(limit=None, timeout=10, wakeup=False)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(5)
    time.sleep(0.3)  # the receiver's queue is bound once capture() starts consuming
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=5):
        add.delay(2, 3)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e["type"] == "task-succeeded" for e in events):
            time.sleep(0.1)
    receivers[0].should_stop = True
    listener.join(5)
    types = {e["type"] for e in events}
    assert {"task-sent", "task-received", "task-started", "task-succeeded"} <= types, types
