"""Publishing job ids to the broker. Knows Celery's wire format, nothing of the worker's code."""

from __future__ import annotations

from typing import Any

from kombu.exceptions import OperationalError

from schemas.broker import celery_broker_conf, celery_priority
from schemas.errors import BrokerUnavailable
from schemas.messages import SYNTHESIZE_TASK, SynthesizeMessage


class Publisher:
    """Sends `SynthesizeMessage`s by task name; one Celery client app per process."""

    def __init__(self, broker_url: str, queue: str) -> None:
        from celery import Celery

        self.broker_url = broker_url
        self.queue = queue
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

    def publish(self, job_id: str, priority: int) -> None:
        """Send one job id; `priority` 0 (lowest) to 9 (most urgent).

        Raises:
        BrokerUnavailable: the broker could not be reached after a few quick retries.
        """
        message = SynthesizeMessage(job_id=job_id)
        try:
            self._app.send_task(
                SYNTHESIZE_TASK, kwargs=message.model_dump(), task_id=job_id, queue=self.queue,
                priority=celery_priority(priority, self.broker_url), retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
            )
        except (OperationalError, ConnectionError, OSError) as err:
            raise BrokerUnavailable(f"cannot reach the broker at {self.broker_url}: {_one_line(err)}") from err

    def close(self) -> None:
        self._app.close()


def _one_line(err: Any) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class QueueDepths:
    """Messages waiting in the broker per queue (Redis: all priority lists; RabbitMQ: ready messages).

    `read()` answers within about `timeout_s` and returns None when the broker does not answer, so a
    metrics scrape or a reaper pass never hangs on a broken broker.
    """

    def __init__(self, broker_url: str, queues: list[str], priority_sep: str | None = None,
                 timeout_s: float = 0.5) -> None:
        from schemas.broker import transport_options

        self.broker_url = broker_url
        self.queues = queues
        self._sep = priority_sep if priority_sep is not None else str(transport_options().get("sep", ":"))
        self._timeout_s = timeout_s
        self._client: Any = None

    def read(self) -> list[int] | None:
        from schemas.broker import broker_kind

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
                    pipe.llen(f"{queue}{self._sep}{level}")
            lengths = pipe.execute()
            return [int(sum(lengths[i * 10 : (i + 1) * 10])) for i in range(len(self.queues))]
        except (redis.RedisError, OSError):
            return None

    def _amqp(self) -> list[int] | None:
        """Passive declare per queue (a queue not declared yet counts 0), on a short-lived connection:
        an idle cached one could be dropped by the broker unnoticed."""
        from kombu import Connection

        conn = Connection(self.broker_url, connect_timeout=self._timeout_s, heartbeat=0,
                          transport_options={"read_timeout": self._timeout_s, "write_timeout": self._timeout_s})
        depths: list[int] = []
        try:
            with conn:
                conn.ensure_connection(max_retries=0)  # kombu's default retries once, 2 s later
                for queue in self.queues:
                    channel = conn.channel()  # a failed passive declare closes its channel
                    try:
                        depths.append(int(channel.queue_declare(queue=queue, passive=True).message_count))
                    except conn.channel_errors as err:
                        if getattr(err, "code", None) != 404:  # NOT_FOUND: no one declared it yet
                            raise
                        depths.append(0)
                    finally:
                        if channel.is_open:
                            channel.close()
        except (*conn.connection_errors, *conn.channel_errors, OperationalError, OSError):
            return None
        return depths
