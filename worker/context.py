"""What a unit of work needs from the process running it: `JobContext`, built once per worker process,
and `HeldLeases`, the one set of leases the process holds now, which the heartbeat renews.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas.db import Store
from schemas.settings import WorkerSettings
from worker.events import Listener, Listeners
from worker.outputs import Outputs
from worker.reaper import Republish

if TYPE_CHECKING:
    from worker.synthesis import Engine


class HeldLeases:
    """The jobs and segments (job id, segment index) this process holds now; thread-safe.

    The pipeline adds what it claims and removes what it ends or puts back; the heartbeat renews exactly
    this set, so a lease this process lost track of expires and is taken over. The heartbeat also marks
    jobs whose renewal it lost (cancelled, taken over): `lost` is checked at chunk boundaries.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: set[str] = set()
        self._segments: set[tuple[str, int]] = set()
        self._lost: set[str] = set()

    def hold(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            self._jobs.update(job_ids)

    def drop(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._jobs.discard(job_id)
                self._lost.discard(job_id)

    def hold_segment(self, job_id: str, idx: int) -> None:
        with self._lock:
            self._segments.add((job_id, idx))

    def drop_segment(self, job_id: str, idx: int) -> None:
        with self._lock:
            self._segments.discard((job_id, idx))

    def snapshot(self) -> tuple[list[str], list[tuple[str, int]]]:
        """The held job ids and segments, now."""
        with self._lock:
            return sorted(self._jobs), sorted(self._segments)

    def mark_lost(self, job_ids: Iterable[str]) -> None:
        """Jobs whose lease is no longer ours (found by the heartbeat or a status check)."""
        with self._lock:
            self._lost.update(j for j in job_ids if j in self._jobs)

    def is_lost(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._lost


@dataclass
class JobContext:
    """What a unit of work needs from the process running it; built once per worker process.

    `engine_for(voice)` gives the started engine of a voice; `should_stop()` is asked at every chunk
    boundary (SIGTERM); `republish` sends job ids to the broker again (a job put back, a call for help
    with a long job's segments); `held` is the process's set of held leases (see `HeldLeases`).
    """

    store: Store
    settings: WorkerSettings
    worker_id: str
    engine_for: Callable[[str], Engine]
    listeners: Listener = field(default_factory=Listeners)
    should_stop: Callable[[], bool] = lambda: False
    republish: Callable[[Republish], None] = lambda _job: None
    held: HeldLeases = field(default_factory=HeldLeases)
    # Where a finished book chapter goes for its AAC encode (worker/books.py, a thread beside synthesis);
    # None: encoded at once, on the finishing thread (tests and tools that run jobs without a runtime).
    book_queue: Callable[[str], None] | None = None
    _outputs: Outputs | None = field(default=None, repr=False)

    @property
    def outputs(self) -> Outputs:
        """The output store and this process's staging area, opened at first use."""
        if self._outputs is None:
            self._outputs = Outputs.open(self.settings.output_location, self.worker_id)
        return self._outputs
