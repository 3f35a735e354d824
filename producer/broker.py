"""Publishing job ids to the broker. Knows Celery's wire format, nothing of the worker's code."""

from __future__ import annotations

from typing import Any

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
        from kombu.exceptions import OperationalError

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
