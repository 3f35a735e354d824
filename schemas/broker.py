"""Broker conventions both sides must agree on (plain data: no Celery import here)."""

from __future__ import annotations

from typing import Any

# Redis redelivers an unacknowledged message after this long. SQL leases recover crashed jobs much
# sooner (schemas/tables.py `lease_expires_at`), so this only has to outlast the longest job.
VISIBILITY_TIMEOUT_S = 6 * 3600


def transport_options() -> dict[str, Any]:
    """Kombu transport options; identical in producer and worker (priority queues, visibility timeout)."""
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "priority_steps": list(range(10)),
        "sep": ":",
        "queue_order_strategy": "priority",
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
    }


def celery_priority(priority: int) -> int:
    """ttsfleet priority (0 = lowest, 9 = most urgent) as a Redis-transport priority (0 = served first)."""
    return 9 - priority
