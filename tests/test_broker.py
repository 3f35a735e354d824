"""Broker conventions: priority mapping for Redis and RabbitMQ, checked on paper and on the real brokers.

The real-broker test publishes with the producer's `Publisher` and consumes with the worker's Celery app
(`make_celery`), so a queue declared differently by the two sides (RabbitMQ's PRECONDITION_FAILED) or a
priority mapped the wrong way round fails here.
"""

from __future__ import annotations

import uuid

import pytest

from schemas.broker import AMQP_MAX_PRIORITY, Publisher, broker_kind, celery_broker_conf, celery_priority
from schemas.errors import InvalidInput
from schemas.settings import WorkerSettings

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_ONLY = {"visibility_timeout", "priority_steps", "sep", "queue_order_strategy"}


@pytest.mark.parametrize(("url", "kind"), [(REDIS, "redis"), ("rediss://h:6380/1", "redis"),
                                           ("unix:///run/redis.sock", "redis"), (AMQP, "amqp"),
                                           ("amqps://u:p@h/v", "amqp"), ("pyamqp://h//", "amqp")])
def test_broker_kind_follows_the_url_scheme(url: str, kind: str) -> None:
    assert broker_kind(url) == kind


def test_priorities_map_to_each_brokers_order() -> None:
    # Redis transport: 0 is served first, so the most urgent (9) becomes 0.
    assert [celery_priority(p, REDIS) for p in range(10)] == list(range(9, -1, -1))
    assert celery_priority(9) == 0  # no URL: the Redis default
    # RabbitMQ: the highest number is served first, so priorities pass through unchanged.
    assert [celery_priority(p, AMQP) for p in range(10)] == list(range(10))
    assert all(celery_priority(p, AMQP) < AMQP_MAX_PRIORITY for p in range(10))
    for bad in (-1, 10):
        with pytest.raises(InvalidInput):
            celery_priority(bad, AMQP)


def test_amqp_conf_declares_priority_queues_without_redis_options() -> None:
    amqp_conf = celery_broker_conf(AMQP)
    assert amqp_conf["task_queue_max_priority"] == AMQP_MAX_PRIORITY
    assert amqp_conf["broker_heartbeat"] == 0
    assert not REDIS_ONLY & set(amqp_conf["broker_transport_options"])
    redis_conf = celery_broker_conf(REDIS)
    assert REDIS_ONLY <= set(redis_conf["broker_transport_options"])
    assert "task_queue_max_priority" not in redis_conf


@pytest.mark.integration
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_urgent_jobs_come_out_first_and_the_depth_is_exported(broker: str,
                                                              request: pytest.FixtureRequest) -> None:
    from worker.app import make_celery
    from worker.metrics import WorkerMetrics

    url = request.getfixturevalue(f"{broker}_url")
    queue = f"ttsfleet-prio-{uuid.uuid4().hex[:8]}"
    publisher = Publisher(url, queue)
    sent = {"low": 0, "urgent": 9, "normal": 5, "lowish": 1}
    try:
        for job_id, priority in sent.items():
            publisher.publish(job_id, priority)
    finally:
        publisher.close()

    metrics = WorkerMetrics(broker_url=url, queues=queue)
    assert metrics.registry.get_sample_value("ttsfleet_queue_depth", {"queue": queue}) == len(sent)
    assert metrics.registry.get_sample_value("ttsfleet_broker_up") == 1.0

    app = make_celery(WorkerSettings(broker_url=url, queue=queue, queues=queue))
    received: list[str] = []

    def on_message(body: object, message: object) -> None:
        received.append(message.headers["id"])  # type: ignore[attr-defined]
        message.ack()  # type: ignore[attr-defined]

    try:
        with app.connection_for_read() as conn, \
                conn.Consumer(app.amqp.queues[queue], accept=["json"], callbacks=[on_message],
                              prefetch_count=1):  # declares the queue the worker's way
            while len(received) < len(sent):
                try:
                    conn.drain_events(timeout=10)
                except TimeoutError:
                    break
    finally:
        app.close()
    assert received == ["urgent", "normal", "lowish", "low"]


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@broker:6379/0", "redis://:***@broker:6379/0"),
    ("amqp://user:s3cret@rabbit:5672/vhost", "amqp://user:***@rabbit:5672/vhost"),
    ("redis://broker:6379/0", "redis://broker:6379/0"),
])
def test_broker_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    from schemas.errors import BrokerUnavailable, redact_url

    assert redact_url(url) == shown
    publisher = Publisher(url.replace("broker:6379", "127.0.0.1:1").replace("rabbit:5672", "127.0.0.1:1"))
    try:
        with pytest.raises(BrokerUnavailable) as raised:
            publisher.publish("job-1", 5)
    finally:
        publisher.close()
    assert "s3cret" not in str(raised.value)
