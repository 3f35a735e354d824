"""The broker: conventions both sides must agree on, the publisher and the queue-depth reader.

Importing this module imports no Celery, kombu or redis: `Publisher` and `QueueDepths` import them when
built, so the producer (which publishes) and the worker (which re-publishes and reads depths) share one
broker client without either importing the other.

Two brokers are supported, chosen by the URL scheme: Redis (`redis://`, `rediss://`, `unix://`) and
RabbitMQ (`amqp://`, `amqps://`, `pyamqp://`). Producer and worker build their Celery config from
`celery_broker_conf` and their priorities from `celery_priority`, so both declare the queue identically:
RabbitMQ refuses a second declaration with other arguments (PRECONDITION_FAILED).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from schemas.errors import BrokerUnavailable, InvalidInput, first_line, redact_url
from schemas.messages import SYNTHESIZE_TASK, SynthesizeMessage
from schemas.settings import DEFAULT_QUEUE

BrokerKind = Literal["redis", "amqp"]

# Redis redelivers an unacknowledged message after this long. SQL leases recover crashed jobs much
# sooner (schemas/tables.py `lease_expires_at`), so this only has to outlast the longest job.
VISIBILITY_TIMEOUT_S = 6 * 3600
# RabbitMQ keeps one sub-queue per priority level, so declare only what ttsfleet uses (0..9).
AMQP_MAX_PRIORITY = 10
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
MAX_PRIORITY = 9  # ttsfleet priorities run from 0 (lowest) to 9 (most urgent)
# Kombu's Redis transport keeps priority N of queue Q in the list Q + PRIORITY_SEP + N (N > 0).
PRIORITY_SEP = ":"


def broker_kind(broker_url: str) -> BrokerKind:
    """`"amqp"` for a RabbitMQ URL, else `"redis"` (the default broker and every other scheme)."""
    return "amqp" if urlsplit(broker_url).scheme.lower() in AMQP_SCHEMES else "redis"


def transport_options(broker_url: str | None = None) -> dict[str, Any]:
    """Kombu transport options; identical in producer and worker. `None` means the Redis default."""
    if broker_url is not None and broker_kind(broker_url) == "amqp":
        # Publisher confirms: `submit` returns only once RabbitMQ has taken the message.
        return {"confirm_publish": True}
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "priority_steps": list(range(10)),
        "sep": PRIORITY_SEP,
        "queue_order_strategy": "priority",
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
    }


def celery_broker_conf(broker_url: str) -> dict[str, Any]:
    """The broker-dependent part of the Celery config, merged by producer and worker alike."""
    conf: dict[str, Any] = {"broker_transport_options": transport_options(broker_url)}
    if broker_kind(broker_url) == "amqp":
        # Every queue Celery declares (the worker's -Q and the producer's target) is a priority queue.
        conf["task_queue_max_priority"] = AMQP_MAX_PRIORITY
        # A solo-pool worker runs the job in its event loop and cannot send AMQP heartbeats meanwhile;
        # RabbitMQ would drop the connection after ~2 missed beats. TCP keepalive still finds dead peers.
        conf["broker_heartbeat"] = 0
    return conf


def celery_priority(priority: int, broker_url: str | None = None) -> int:
    """ttsfleet priority (0 = lowest, 9 = most urgent) as the broker's message priority.

    Kombu's Redis transport serves 0 first, hence `9 - priority`; RabbitMQ serves the highest number
    first, so it gets `priority` unchanged. `None` means the Redis default.

    Raises:
    InvalidInput: `priority` is outside 0..9.
    """
    if not 0 <= priority <= MAX_PRIORITY:
        raise InvalidInput(f"priority must be 0..{MAX_PRIORITY}, got {priority}")
    if broker_url is not None and broker_kind(broker_url) == "amqp":
        return priority
    return MAX_PRIORITY - priority


class Publisher:
    """Sends `SynthesizeMessage`s by task name; one Celery client app per process. Knows Celery's wire
    format, nothing of the worker's code."""

    def __init__(self, broker_url: str, queue: str = DEFAULT_QUEUE) -> None:
        from celery import Celery

        self.broker_url = broker_url
        self.queue = queue  # where `publish` sends a job that names no queue
        self._app = Celery("ttsfleet-producer", broker=broker_url, set_as_current=False)
        self._app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=False,
            broker_connection_timeout=5,
            task_ignore_result=True,
            task_send_sent_event=True,  # Flower shows how long a job waited in the queue
        )
        # Same broker-dependent part as the worker's (worker/app.py), so both declare the queue alike.
        self._app.conf.update(celery_broker_conf(broker_url))

    def publish(self, job_id: str, priority: int, queue: str | None = None) -> None:
        """Send one job id to `queue` (default: this publisher's); `priority` 0 (lowest) to 9 (most urgent).

        Raises:
            BrokerUnavailable: the broker could not be reached after a few quick retries.
        """
        self.publish_many([([job_id], priority, queue)])

    def publish_many(self, messages: Sequence[tuple[Sequence[str], int, str | None]],
                     sent: Callable[[int], object] = lambda _n: None) -> None:
        """Send each `(job_ids, priority, queue)` as one message (one job id: a version 1 message, which every
        worker reads), all over one connection; `sent(i)` is called once message `i` has been sent.

        Raises:
            BrokerUnavailable: the broker could not be reached after a few quick retries; the messages
                before it were sent (`sent` said which).
        """
        from kombu.exceptions import OperationalError

        try:
            with self._app.producer_or_acquire() as producer:
                for n, (job_ids, priority, queue) in enumerate(messages):
                    message = SynthesizeMessage.of(list(job_ids))
                    self._app.send_task(
                        SYNTHESIZE_TASK, kwargs=message.model_dump(exclude_defaults=True) | {
                            "schema_version": message.schema_version}, task_id=job_ids[0],
                        queue=queue or self.queue, priority=celery_priority(priority, self.broker_url),
                        producer=producer, retry=True,
                        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                      "interval_max": 1})
                    sent(n)
        except (OperationalError, ConnectionError, OSError) as err:
            raise BrokerUnavailable(f"cannot reach the broker at {redact_url(self.broker_url)}: "
                                    f"{first_line(err)}") from err

    def close(self) -> None:
        self._app.close()


class QueueDepths:
    """Messages waiting in the broker per queue (Redis: all priority lists; RabbitMQ: ready messages).

    `read()` answers within about `timeout_s` and returns None when the broker does not answer, so a
    metrics scrape or a reaper pass never hangs on a broken broker.
    """

    def __init__(self, broker_url: str, queues: list[str], timeout_s: float = 0.5) -> None:
        self.broker_url = broker_url
        self.queues = queues
        self._timeout_s = timeout_s
        self._client: Any = None

    def read(self) -> list[int] | None:
        """Depth of each of `queues`, in order; None when the broker does not answer or is not Redis/AMQP."""
        if broker_kind(self.broker_url) == "amqp":
            return self._amqp()
        if not self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return None
        return self._redis()

    def total(self) -> int | None:
        depths = self.read()
        return None if depths is None else sum(depths)

    def _redis(self) -> list[int] | None:
        import redis

        try:
            if self._client is None:
                self._client = redis.Redis.from_url(self.broker_url, socket_timeout=self._timeout_s,
                                                    socket_connect_timeout=self._timeout_s)
            pipe = self._client.pipeline(transaction=False)
            for queue in self.queues:
                pipe.llen(queue)
                for level in range(1, 10):
                    pipe.llen(f"{queue}{PRIORITY_SEP}{level}")
            lengths = pipe.execute()
            return [int(sum(lengths[i * 10 : (i + 1) * 10])) for i in range(len(self.queues))]
        except (redis.RedisError, OSError):
            return None

    def _amqp(self) -> list[int] | None:
        """Passive declare per queue (a queue not declared yet counts 0), on a short-lived connection:
        an idle cached one could be dropped by the broker unnoticed."""
        from kombu import Connection
        from kombu.exceptions import OperationalError

        conn = Connection(self.broker_url, connect_timeout=self._timeout_s, heartbeat=0,
                          transport_options={"read_timeout": self._timeout_s, "write_timeout": self._timeout_s})
        try:
            with conn:
                conn.ensure_connection(max_retries=0)  # kombu's default retries once, 2 s later
                return [self._amqp_depth(conn, queue) for queue in self.queues]
        except (*conn.connection_errors, *conn.channel_errors, OperationalError, OSError):
            return None

    @staticmethod
    def _amqp_depth(conn: Any, queue: str) -> int:
        channel = conn.channel()  # a failed passive declare closes its channel
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except conn.channel_errors as err:
            if getattr(err, "code", None) != 404:  # NOT_FOUND: no one declared it yet
                raise
            return 0
        finally:
            if channel.is_open:
                channel.close()
