"""`stats --by segment`: what each worker made of long jobs' segments, from the segment and chunk rows.

One GROUP BY on SQLite and PostgreSQL alike: per worker (and its card and dtype), the finished segments,
their chunks, audio and synthesis seconds, and how many long jobs it helped with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, cast, func, select

from schemas.db import Store
from schemas.status import JobStatus
from schemas.tables import Chunk, Segment, Worker

NO_CARD = "-"  # a worker that left no registry row


@dataclass(frozen=True, slots=True)
class SegmentStatsRow:
    """One worker's finished segments; `throughput_x` is audio seconds over synthesis seconds."""

    worker: str
    card: str
    dtype: str
    jobs: int
    segments: int
    chunks: int
    audio_s: float
    synth_s: float
    throughput_x: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def segment_stats(store: Store, since: datetime | None = None, until: datetime | None = None) -> list[SegmentStatsRow]:
    """Per worker, segments finished between `since` and `until` (naive UTC; None: unbounded)."""
    in_segment = and_(Chunk.job_id == Segment.job_id, Chunk.idx >= Segment.first_chunk, Chunk.idx < Segment.end_chunk)
    where = [Segment.status == JobStatus.SUCCEEDED]
    where += [Segment.finished_at >= since] if since else []
    where += [Segment.finished_at < until] if until else []
    query = (select(Segment.worker_id, func.coalesce(Worker.card, NO_CARD), func.coalesce(Worker.dtype, NO_CARD),
                    func.count(func.distinct(Segment.job_id)),
                    func.count(func.distinct(Segment.job_id + ":" + cast(Segment.idx, String))),
                    func.count(Chunk.idx), func.coalesce(func.sum(Chunk.audio_s), 0.0),
                    func.coalesce(func.sum(Chunk.synth_s), 0.0))
             .select_from(Segment).join(Chunk, in_segment).outerjoin(Worker, Worker.id == Segment.worker_id)
             .where(*where).group_by(Segment.worker_id, Worker.card, Worker.dtype).order_by(Segment.worker_id))
    with store.read() as session:
        rows = session.execute(query).all()
    return [SegmentStatsRow(str(worker), card, dtype, jobs, segments, chunks, float(audio or 0), float(synth or 0),
                            float(audio or 0) / float(synth) if synth else None)
            for worker, card, dtype, jobs, segments, chunks, audio, synth in rows]
