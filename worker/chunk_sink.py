"""The save path of a unit of work: what happens to each chunk's audio as the engine makes it.

A short job's chunks stay in memory; a long job's (and a segment's) are stored per engine batch — one
file, one flush of the file and its folder, and one transaction per job and batch — so the bookkeeping of
a card that makes hundreds of chunks a second stays off its critical path, and a crash loses at most the
batch in flight. The end of a batch is counted from the chunks' `batch_size` (the engine hands a batch's
chunks over one after another; on a CPU's lanes, a pair). The same flush finishes the jobs whose chunks
are all made, in one transaction (`worker.results`): a notice on a CPU ends while the lanes run on, a
card's notices end together. Leases (jobs' and segments') are re-checked every `CHECK_S` (one read), and
once no job of the unit is still ours the engine's call is abandoned (`UnitLost`), so a cancel stops a
book's segment within about a second instead of at the end of the call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from schemas.errors import JobInterrupted, WorkerStopping
from worker import lease, segments
from worker.context import JobContext
from worker.naming import attempt_tag
from worker.synthesis import ChunkAudio
from worker.unit import Member, Unit

log = logging.getLogger("ttsfleet.sink")

FLUSH_CHUNKS = 256  # a batch larger than this is stored in parts (memory stays bounded)
CHECK_S = 1.0  # leases are re-checked this often (a cancel stops the unit within it)


class UnitLost(JobInterrupted):
    """Raised from the engine's callback once no job of the unit is still ours: the rest of the call would
    make audio nobody keeps."""


def chunk_columns(chunk: ChunkAudio, location: str, offset: int, sample_rate_hz: int,
                  attempt: int) -> dict[str, Any]:
    """The chunk row's audio columns for `chunk`, stored at `offset` in `location` by attempt `attempt`."""
    return {"audio_path": location, "audio_offset": offset, "samples": len(chunk.samples),
            "audio_s": len(chunk.samples) / sample_rate_hz, "synth_s": chunk.synth_s,
            "batch_size": chunk.batch_size, "attempt": attempt, "dtype": str(chunk.dtype),
            "fp32_redo": chunk.fp32_redo}


class ChunkSink:
    """Takes a unit's chunk audio from the engine (`on_chunk`) and stores and finishes as described in the
    module docstring. `finish(members)` is the finish path, called with the members that are ready."""

    def __init__(self, unit: Unit, ctx: JobContext, sample_rate_hz: int,
                 finish: Callable[[list[Member]], object]) -> None:
        self.unit, self.ctx, self.sample_rate_hz, self._finish = unit, ctx, sample_rate_hz, finish
        self._made = 0
        self._batch_left = 0  # chunks of the engine's current batch still to come
        self._checked_at = time.perf_counter()

    def on_chunk(self, owners: dict[int, tuple[Member, int]]) -> Callable[[ChunkAudio], None]:
        """The engine's callback for one call: `owners[i]` is the member and chunk index of input `i`.

        Raises WorkerStopping at a chunk boundary once the worker is asked to stop."""
        def take(chunk: ChunkAudio) -> None:
            member, idx = owners[chunk.idx]
            if self.ctx.held.is_lost(member.job_id) and member.lost is None:
                member.lost = f"job {member.job_id} was cancelled or taken over"
            if member.lost is None and not member.ended:
                member.take(replace(chunk, idx=idx))
                self._made += 1
                if not member.durable:
                    self._progress(member)
            self._batch_left = (self._batch_left or max(chunk.batch_size, 1)) - 1
            self.maybe_flush()
            if not self.unit.live() and any(m.lost is not None and not m.ended for m in self.unit.members):
                raise UnitLost(f"jobs {', '.join(self.unit.ids[:3])} are no longer ours: the call is abandoned")
            if self.ctx.should_stop():
                raise WorkerStopping(f"worker stopping: jobs {', '.join(self.unit.ids[:3])}"
                                     f"{' ...' if len(self.unit.ids) > 3 else ''} put back")
        return take

    def maybe_flush(self) -> None:
        """Flush at the end of an engine batch (or of FLUSH_CHUNKS chunks)."""
        if time.perf_counter() - self._checked_at >= CHECK_S:
            self._check_leases()
        if self._made and (self._batch_left == 0 or self._made >= FLUSH_CHUNKS):
            self.flush()

    def flush(self) -> None:
        """Store the durable members' made chunks, then finish the members that are ready."""
        for member in self.unit.live():
            if member.durable and member.made:
                self._store(member)
        ready = [m for m in self.unit.live() if m.ready]
        if ready:
            self._finish(ready)
        self._made = 0

    def _store(self, member: Member) -> None:
        """One file and one transaction for what this member made since its last store."""
        order = sorted(member.made)
        held, seg = member.held, member.segment
        tag = attempt_tag(held, (seg.idx, seg.attempt) if seg is not None else None)
        location, offsets = member.files.save_batch(f"{order[0]:06d}-{tag}.wav",
                                                    [member.made[i].samples for i in order], self.sample_rate_hz)
        attempt = seg.attempt if seg is not None else held.attempt
        rows = [{"idx": i, **chunk_columns(member.made[i], location, offset, self.sample_rate_hz, attempt)}
                for i, offset in zip(order, offsets, strict=True)]
        try:
            if seg is not None:
                completed, _done, _total = segments.store_chunks(self.ctx.store, seg, self.ctx.worker_id,
                                                                  self.ctx.settings.lease_s, rows)
                member.completed |= completed
            else:
                lease.store_chunks(self.ctx.store, held.job_id, self.ctx.worker_id, self.ctx.settings.lease_s, rows)
        except JobInterrupted as err:  # cancelled or taken over: the others go on
            member.lost = str(err)
            return
        member.stored(len(order))
        self._progress(member)

    def _progress(self, member: Member) -> None:
        total = member.held.chunks_total
        self.ctx.listeners.chunk_done(member.job_id, total - len(member.pending) + member.done, total)

    def _check_leases(self) -> None:
        """One read each for the unit's jobs and segments: which are still ours (a cancel is noticed within
        CHECK_S, even in the middle of a long engine batch)."""
        self._checked_at = time.perf_counter()
        jobs = [m for m in self.unit.live() if m.segment is None]
        segs = [m for m in self.unit.live() if m.segment is not None]
        held = lease.still_held(self.ctx.store, self.ctx.worker_id, [m.job_id for m in jobs]) if jobs else set()
        held_segs = segments.still_held(self.ctx.store, self.ctx.worker_id,
                                        [(m.job_id, m.segment.idx) for m in segs if m.segment]) if segs else set()
        for member in jobs:
            if member.job_id not in held:
                member.lost = f"job {member.job_id} was cancelled or taken over"
        for member in segs:
            if member.segment and (member.job_id, member.segment.idx) not in held_segs:
                member.lost = f"job {member.job_id} was cancelled, or its segment {member.segment.idx} taken over"
