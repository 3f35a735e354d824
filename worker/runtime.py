"""What one worker process holds for its whole life: the store, its device and pinned precision policy,
the loaded voices (engines), its registry row and a heartbeat thread.

Built once at start (`WorkerRuntime.start`), which fails fast — a precision the card cannot run, a voice
that does not load, a canary that cannot produce sound — before the worker takes any job.
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import os
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from schemas.db import Store, open_store
from schemas.errors import RetryableError, WorkerStopping
from schemas.settings import WorkerSettings
from schemas.status import Runtime, WorkerState
from schemas.voices import NULL_VOICE, split_speaker
from worker import books, lease, reaper, registry, segments
from worker.books import BookEncoder
from worker.context import HeldLeases, JobContext
from worker.events import JobOutcome, Listener, Listeners
from worker.job import run_delivery, synthesize_job
from worker.reaper import Republish
from worker.synthesis import policy_quality

if TYPE_CHECKING:
    from worker.device import DeviceInfo
    from worker.precision import Policy
    from worker.synthesis import Engine

log = logging.getLogger("ttsfleet.worker")
MAX_LOADED_VOICES = 2
REAP_EVERY_BEATS = 4  # the reaper's queries run every this many heartbeats


class WorkerRuntime:
    """One device, one policy, a few loaded voices; see module docstring."""

    def __init__(self, settings: WorkerSettings, db: Store, device: DeviceInfo, policy: Policy) -> None:
        self.settings = settings
        self.store = db
        self.device = device
        self.requested = policy  # what every voice is started under; each engine's own policy is what runs
        self.policy = policy
        slot = settings.worker_name or f"{socket.gethostname()}/{device.torch_device}"
        self.slot = slot + "/"
        self.worker_id = f"{slot}/{os.getpid()}"
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._stop = threading.Event()
        self._stopping = threading.Event()  # asked to stop: the running job stops at its next chunk
        self._thread: threading.Thread | None = None
        self.held = HeldLeases()  # the leases this process holds now: the only ones the heartbeat renews
        self.listeners = Listeners()
        self.beat_hooks: list[Callable[[], None]] = []  # run after each heartbeat (metrics refresh)
        self.republisher: Callable[[Republish], None] | None = None  # set with the heartbeat (a broker at hand)
        self.ctx = JobContext(store=db, settings=settings, worker_id=self.worker_id, engine_for=self.engine_for,
                              listeners=self.listeners, should_stop=self._stopping.is_set,
                              republish=self._republish, held=self.held)
        self.book_encoder = BookEncoder(self.ctx)  # chapters encoded for their .m4b beside synthesis
        self._rejoined: set[str] = set()  # chapters the reaper handed to the encoder
        self.ctx.book_queue = self.book_encoder.submit

    def add_listener(self, listener: Listener) -> None:
        """Hook `listener` into every job this runtime runs from now on (called in the order added)."""
        self.listeners.add(listener)

    @classmethod
    def start(cls, settings: WorkerSettings) -> WorkerRuntime:
        """Open the store, pin the policy, load and canary-test the default voice.

        Raises:
            PrecisionRefused: the requested precision cannot run on this device.
            UnknownVoice, PermanentError: the default voice cannot be loaded or speak.
            StoreUnavailable: the database cannot be reached.
        """
        from worker.device import detect_device
        from worker.precision import apply_process_settings, choose_policy

        _quiet_libraries()
        db = open_store(settings.database_url)
        device = detect_device(settings.device)
        policy = choose_policy(device, settings.precision, settings.runtime)
        apply_process_settings(policy, device)
        runtime = cls(settings, db, device, policy)
        engine = runtime.engine_for(settings.voice)
        runtime.policy = engine.policy  # what the default voice runs under (registry, `run`'s banner)
        # Everything loaded so far lives as long as the process: move it out of the collector's view, so
        # the full collection after every job scans only what jobs made (~95 ms -> a few ms per job on a
        # 2-core CPU; docs/benchmarks.md).
        gc.freeze()
        return runtime

    def engine_for(self, voice: str) -> Engine:
        """The engine for `voice`, loading it (and evicting the least recently used) if needed. A speaker
        (`NAME#SPEAKER`) is chosen per chunk, so every speaker of a voice shares its one engine."""
        voice = split_speaker(voice)[0]
        if voice in self._engines:
            self._engines.move_to_end(voice)
            return self._engines[voice]
        from worker.engine import start_engine
        from worker.voices import load_voice

        if voice == NULL_VOICE:  # no model: nothing to load, check or evict
            from worker.null_voice import NullEngine

            self._engines[voice] = NullEngine(self.device, self.policy)
            return self._engines[voice]
        while len(self._engines) >= MAX_LOADED_VOICES:
            _, old = self._engines.popitem(last=False)
            old.cleanup()
        onnx = self.requested.runtime == Runtime.ONNXRUNTIME
        if not onnx:
            _quiet_libraries(transformers=True)
        loaded = load_voice(voice, self.settings.voices_cache_dir, self.settings.voice_dir_list, onnx=onnx)
        engine = start_engine(loaded, self.device, self.requested, token_budget=self.settings.token_budget,
                              deterministic=self.settings.deterministic, threads=self.settings.threads)
        for note in engine.notes:
            log.warning("voice %s: %s", voice, note)
        self._engines[voice] = engine
        return engine

    def run_delivery(self, job_ids: list[str] | tuple[str, ...]) -> list[JobOutcome]:
        """Run one message's jobs through `worker.job.run_delivery`, their leases kept alive by the heartbeat.

        Raises WorkerStopping without claiming anything once a stop was requested: a worker on its way out
        takes no new work (its caller sends the message again)."""
        if self._stopping.is_set():
            raise WorkerStopping(f"worker stopping: job {job_ids[0]} not started here")
        return run_delivery(job_ids, self.ctx)

    def run_job(self, job_id: str) -> JobOutcome:
        """`run_delivery` of one job: its outcome (see `worker.job.synthesize_job`)."""
        if self._stopping.is_set():
            raise WorkerStopping(f"worker stopping: job {job_id} not started here")
        return synthesize_job(job_id, self.ctx)

    def resume_dead_predecessors(self) -> list[Republish]:
        """Jobs left running by a dead earlier process of this slot, put back (queued) to run now."""
        return registry.release_previous_incarnations(self.store, self.slot, self.worker_id,
                                                      socket.gethostname(), self.settings.lease_s)

    def _republish(self, job: Republish) -> None:
        if self.republisher is not None:
            self.republisher(job)

    def request_stop(self) -> bool:
        """Ask the running job to stop at its next chunk boundary (it is put back with its chunks).
        Returns False when a stop was already requested."""
        first = not self._stopping.is_set()
        self._stopping.set()
        if self.settings.health_dir is not None:  # draining: no new work for this pod
            (self.settings.health_dir / "ready").unlink(missing_ok=True)
        return first

    def abandon(self) -> list[str]:
        """Put every job and segment this process holds back now, without waiting for a chunk boundary (a
        second SIGTERM, SIGQUIT, or a job that would not stop in time). Returns the job ids put back."""
        jobs, held_segments = self.held.snapshot()
        back = lease.release(self.store, jobs, self.worker_id, counted=False)
        segments.release_held(self.store, self.worker_id)
        return sorted(set(back) | {job_id for job_id, _ in held_segments})

    def registry_row(self) -> dict[str, Any]:
        """The workers-table row; `details.runtime` says which runtime runs the default voice. torch is not
        imported for it (an onnxruntime worker never loads torch)."""
        engine = next(iter(self._engines.values()), None)
        notes = engine.notes if engine is not None else []
        return {
            "id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
            "device": self.device.torch_device, "device_index": self.device.index, "card": self.device.name,
            "capability": self.device.capability_str, "memory_bytes": self.device.memory_bytes,
            "backend": str(self.device.backend), "torch_version": _torch_version(),
            "cuda_version": _cuda_version(), "dtype": str(self.policy.dtype), "tf32": self.policy.tf32,
            "policy_reason": self.policy.reason + "".join(f"; {n}" for n in notes),
            "voice": self.settings.voice, "queues": self.settings.queues,
            **policy_quality(self.policy, engine.fidelity if engine is not None else None),
            "details": {"canary_s": getattr(engine, "canary_s", None), "mode": str(self.policy.mode),
                        "runtime": str(engine.runtime if engine is not None else self.policy.runtime),
                        "threads": getattr(getattr(engine, "runner", None), "threads", None)},
        }

    def register(self) -> None:
        registry.register_worker(self.store, self.registry_row())

    def start_heartbeat(self, republish: Callable[[Republish], None] | None = None) -> None:
        """Beat every `heartbeat_s` (worker row + our job's lease); every few beats, re-publish jobs whose
        worker died and queued jobs nobody claimed for a lease period (`reap`)."""
        self.republisher = republish
        self._thread = threading.Thread(target=self._beat, args=(republish,), daemon=True,
                                        name="ttsfleet-heartbeat")
        self._thread.start()

    def _beat(self, republish: Callable[[Republish], None] | None) -> None:
        beats = 0
        while not self._stop.wait(self.settings.heartbeat_s):
            beats += 1
            try:
                jobs, held_segments = self.held.snapshot()
                lost = registry.heartbeat(self.store, self.worker_id, self.settings.lease_s, jobs, held_segments)
                self.held.mark_lost(lost)  # cancelled or taken over: the pipeline stops saving them
                self._touch_health("heartbeat")
                for hook in self.beat_hooks:
                    hook()
                if republish is not None and beats % REAP_EVERY_BEATS == 0:
                    self.reap(republish)
            except RetryableError as err:
                log.warning("heartbeat: %s", err)
            except Exception:  # the heartbeat must outlive any single failure
                log.exception("heartbeat failed")

    def mark_ready(self) -> None:
        """Write the probe files (`health_dir`): `ready` (voice loaded, canary passed) and `heartbeat`."""
        self._touch_health("ready")
        self._touch_health("heartbeat")

    def _touch_health(self, name: str) -> None:
        if self.settings.health_dir is None:
            return
        self.settings.health_dir.mkdir(parents=True, exist_ok=True)
        (self.settings.health_dir / name).write_text(f"{self.worker_id} {time.time():.0f}\n", encoding="utf-8")

    def reap(self, republish: Callable[[Republish], None]) -> list[str]:
        """Re-publish jobs whose worker died and queued jobs nobody claimed for a lease period, whatever the
        queue's depth (`worker.reaper.due`), each to the queue it was submitted to. Duplicates are harmless
        because a claim is a compare-and-set. Returns their ids."""
        orphans = reaper.due(self.store, lease_s=self.settings.lease_s)
        for job in orphans:
            log.warning("re-publishing orphaned job %s to %s", job.job_id, job.queue)
            republish(job)
        for chapter in books.unjoined_chapters(self.store):  # a worker killed before a chapter's encode
            if chapter not in self._rejoined:  # once per process: a book that cannot be joined is not retried
                self._rejoined.add(chapter)
                log.warning("book chapter %s has no encode for its .m4b: encoding it again", chapter)
                self.book_encoder.submit(chapter)
        return [job.job_id for job in orphans]

    def stop(self, free_engines: bool = True) -> None:
        """Stop the heartbeat, free the engines (not from another thread while one may be running: pass
        False) and mark this worker stopped in the registry."""
        self._stop.set()
        if self.settings.health_dir is not None:  # draining: no longer ready for new work
            (self.settings.health_dir / "ready").unlink(missing_ok=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for engine in self._engines.values() if free_engines else ():
            engine.cleanup()
        if free_engines:  # a normal stop: the chapters finished so far are encoded and their books joined
            self.book_encoder.stop()  # (not when abandoning on a fatal error: that exits at once)
        try:
            registry.set_worker_state(self.store, self.worker_id, WorkerState.STOPPED)
        except RetryableError:
            pass


def _torch_version() -> str:
    """The installed torch version, read from its metadata (importing torch costs seconds)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cuda_version() -> str | None:
    """torch's CUDA version when torch is already imported (a CUDA worker); None otherwise."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.version.cuda


def _quiet_libraries(transformers: bool = False) -> None:
    """transformers prints progress bars and load reports on every model load; a worker log wants none.
    Set through the environment (read when transformers is imported); transformers itself is imported
    only when `transformers` (a torch voice is about to load) or when it already is."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not transformers and "transformers" not in sys.modules:
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
