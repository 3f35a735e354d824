"""Which piece of work an idle card takes next: the one rule the workers and the fleet simulator share.

A pure function of the candidates and of speeds (audio seconds made per second of work), so the
simulator (`producer/simulate.py`) runs exactly the choice a worker makes (`worker/segments.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median


@dataclass(frozen=True, slots=True)
class Candidate:
    """A leasable piece of work: a whole short job or one segment of a long one.

    `order` is the arrival order (smaller first); `audio_s` is the piece's expected audio (seconds),
    `job_remaining_audio_s` what its whole job still has to make (its own `audio_s` for a short job)."""

    key: str
    priority: int
    order: float
    audio_s: float
    job_remaining_audio_s: float


def fleet_speed(speeds: list[float]) -> float | None:
    """The fleet's typical speed (median of the measured cards, audio s per s); None if none measured."""
    measured = [s for s in speeds if s > 0]
    return median(measured) if measured else None


def choose(candidates: list[Candidate], my_speed: float | None, typical_speed: float | None) -> Candidate | None:
    """The candidate a card of speed `my_speed` should take; None when there is none.

    Priority first, always. Among equal priorities: with both speeds measured, a card at least as fast as
    the fleet's typical card takes the piece of the job with the most work left (long books to fast
    cards, so the longest job does not wait on a slow card), and a slower card the smallest piece
    (notices to slow cards). With nothing measured: arrival order (FIFO), as before.
    """
    if not candidates:
        return None
    top = max(c.priority for c in candidates)
    tied = [c for c in candidates if c.priority == top]
    if my_speed is None or typical_speed is None or my_speed <= 0:
        return min(tied, key=lambda c: (c.order, c.key))
    if my_speed >= typical_speed:
        return min(tied, key=lambda c: (-c.job_remaining_audio_s, c.order, c.key))
    return min(tied, key=lambda c: (c.audio_s, c.order, c.key))


# How many leasable pieces one choice looks at: the oldest of the highest priority (a worker's SQL read,
# the simulator's window), so a choice costs the same whatever the backlog.
CANDIDATES_WINDOW = 64

# A job of at most this many chunks is short (a notice): a worker keeps its chunk audio in memory, may run
# it together with others of its voice, and `submit` sends such jobs several to a message.
SHORT_JOB_CHUNKS = 4
# Short jobs one message carries at most; `submit` sends fewer when the fleet is larger (`jobs_per_message`).
SHORT_JOBS_PER_MESSAGE = 32


def jobs_per_message(short_jobs: int, workers: int) -> int:
    """How many of `short_jobs` waiting short jobs one message carries when `workers` serve their queue:
    enough that the broker costs next to nothing per job, few enough that each worker gets about two
    messages (a small batch still spreads over the fleet); between 1 and SHORT_JOBS_PER_MESSAGE."""
    return max(1, min(SHORT_JOBS_PER_MESSAGE, -(-short_jobs // (2 * max(workers, 1)))))


# English speech runs at about 15 characters a second (docs/fleet.md): how audio is estimated from text
# before any of it is made.
CHARS_PER_AUDIO_S = 15.0


def plan_segments(chunk_chars: list[int], segment_chars: int) -> list[tuple[int, int, int]]:
    """Cut a job's chunks (their character counts, in order) into runs of consecutive chunks of about
    `segment_chars` characters: `(first_chunk, end_chunk_exclusive, chars)` each. A job shorter than two
    segments, or `segment_chars` 0, stays one piece: `[]` (no segments, no overhead)."""
    if segment_chars <= 0 or sum(chunk_chars) < 2 * segment_chars:
        return []
    spans: list[tuple[int, int, int]] = []
    first, chars = 0, 0
    for idx, n in enumerate(chunk_chars):
        chars += n
        if chars >= segment_chars:
            spans.append((first, idx + 1, chars))
            first, chars = idx + 1, 0
    if chars:
        if spans and chars < segment_chars / 2:  # a short tail joins the last segment
            last_first, _, last_chars = spans.pop()
            spans.append((last_first, len(chunk_chars), last_chars + chars))
        else:
            spans.append((first, len(chunk_chars), chars))
    return spans
