"""Celery tasks: thin wrappers that validate the message and call the plain job function."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from schemas.broker import MAX_PRIORITY
from schemas.errors import DeviceLost, RetryableError, WorkerStopping
from schemas.messages import SYNTHESIZE_TASK, SynthesizeMessage
from worker import reaper
from worker.reaper import Republish
from worker.runtime import WorkerRuntime

log = logging.getLogger("ttsfleet.tasks")


def register_tasks(app: Any, runtime: WorkerRuntime, republish: Callable[[Republish], None]) -> None:
    """Register `ttsfleet.synthesize` on `app`, bound to this process's runtime."""

    @app.task(name=SYNTHESIZE_TASK, bind=True, autoretry_for=(RetryableError,), retry_backoff=True,
              retry_backoff_max=300, retry_jitter=True, max_retries=20)
    def synthesize(self: Any, **message: Any) -> str:
        """Synthesize the job named by the message: validate, run, report."""
        job_id = SynthesizeMessage.model_validate(message).job_id
        try:
            return str(runtime.run_job(job_id).status)
        except WorkerStopping as err:
            # Put back at a chunk boundary on SIGTERM: send it again so another worker resumes it now.
            log.warning("%s", err)
            job = reaper.route(runtime.store, job_id, MAX_PRIORITY)
            if job is not None:
                republish(job)
            return "released"
        except DeviceLost as err:
            # CUDA is unusable in this process: the job was put back; send it again and let the
            # supervisor restart us with a fresh context.
            log.critical("device lost on job %s: %s; exiting", job_id, err)
            job = reaper.route(runtime.store, job_id, MAX_PRIORITY)
            if job is not None:
                republish(job)
            os._exit(3)
