"""Broker conventions both sides must agree on (plain data: no Celery import here).

Two brokers are supported, chosen by the URL scheme: Redis (`redis://`, `rediss://`, `unix://`) and
RabbitMQ (`amqp://`, `amqps://`, `pyamqp://`). Producer and worker build their Celery config from
`celery_broker_conf` and their priorities from `celery_priority`, so both declare the queue identically:
RabbitMQ refuses a second declaration with other arguments (PRECONDITION_FAILED).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from schemas.errors import InvalidInput

BrokerKind = Literal["redis", "amqp"]

# Redis redelivers an unacknowledged message after this long. SQL leases recover crashed jobs much
# sooner (schemas/tables.py `lease_expires_at`), so this only has to outlast the longest job.
VISIBILITY_TIMEOUT_S = 6 * 3600
# RabbitMQ keeps one sub-queue per priority level, so declare only what ttsfleet uses (0..9).
AMQP_MAX_PRIORITY = 10
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
MAX_PRIORITY = 9  # ttsfleet priorities run from 0 (lowest) to 9 (most urgent)


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
        "sep": ":",
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
