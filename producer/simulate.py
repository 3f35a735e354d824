"""A discrete-event simulation of a fleet running a workload, under the workers' own scheduling code.

Cards take pieces of work (whole jobs, or segments of long ones cut by `schemas.scheduling.plan_segments`)
as the workers do: each idle card asks `schemas.scheduling.choose` for a piece among the oldest jobs with
work left, holds it for `overhead_s + audio_s / speed_x`, and a job ends when its last piece does (plus its
assembly). Written by hand with `heapq`: the model is three event kinds (arrival, piece done, card idle)
and a maintained DES library (SimPy) would add processes and a dependency without removing any of it.

Policies: `fifo` (job-level leases, arrival order: ttsfleet before segments), `segments` (long jobs cut
into segments, arrival order) and `card-aware` (segments, and the card-aware choice from measured speeds).
"""

from __future__ import annotations

import heapq
import itertools
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import InvalidInput
from schemas.scheduling import CANDIDATES_WINDOW, CHARS_PER_AUDIO_S, Candidate, choose, fleet_speed, plan_segments

CHUNK_AUDIO_S = 10.0  # a chunk of about 150 characters: how a job's text is cut before segments are planned


class Policy(StrEnum):
    FIFO = "fifo"
    SEGMENTS = "segments"
    CARD_AWARE = "card-aware"


class CardSpec(BaseModel):
    """`count` cards of one kind; `speed_x` audio seconds made per second (measured by `stats`, or given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    count: int = Field(default=1, ge=1)
    speed_x: float = Field(gt=0)


class FleetSpec(BaseModel):
    """fleet.toml: `[[card]]` tables and the costs every piece and job pay besides synthesis."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    card: list[CardSpec] = Field(min_length=1)
    segment_chars: int = Field(default=3000, ge=0)  # as the workers' TTSFLEET_SEGMENT_CHARS
    piece_overhead_s: float = Field(default=0.2, ge=0)  # claim, delivery, voice warm-up per lease
    assembly_s_per_audio_s: float = Field(default=0.0, ge=0)  # joining and encoding the file, per audio second


class JobSpec(BaseModel):
    """One line of workload.jsonl: a job's class, its size (`audio_s`, or `chars`), arrival and priority."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    job_class: str = Field(default="job", alias="class")
    audio_s: float | None = Field(default=None, gt=0)
    chars: int | None = Field(default=None, gt=0)
    arrival_s: float = Field(default=0.0, ge=0)
    priority: int = Field(default=5, ge=0, le=9)

    @property
    def size_audio_s(self) -> float:
        return self.audio_s if self.audio_s is not None else (self.chars or 1) / CHARS_PER_AUDIO_S


@dataclass
class PolicyResult:
    """What one policy gave: makespan, p95 latency per job class and busy fraction per card kind."""

    policy: str
    makespan_s: float
    p95_latency_s: dict[str, float]
    utilisation: dict[str, float]


@dataclass
class _Job:
    spec: JobSpec
    order: int
    pieces: list[float]  # audio seconds of each piece not yet taken
    left: int = 0  # pieces not yet finished
    finished_s: float = 0.0


@dataclass
class _Sim:
    fleet: FleetSpec
    policy: Policy
    now: float = 0.0
    events: list[tuple[float, int, str, int]] = field(default_factory=list)
    # jobs with pieces to take, per priority, oldest first
    waiting: dict[int, dict[int, _Job]] = field(default_factory=lambda: defaultdict(dict))
    busy_s: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    idle: list[int] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)


def load_fleet(path: Path) -> FleetSpec:
    """Raises: InvalidInput: unreadable or invalid TOML (one line)."""
    try:
        return FleetSpec.model_validate(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as err:
        raise InvalidInput(f"{path}: not a fleet file: {str(err).splitlines()[0]}") from err


def load_workload(path: Path) -> list[JobSpec]:
    """Raises: InvalidInput: unreadable file or an invalid line (one line naming it)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InvalidInput(f"{path}: {err}") from err
    jobs = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                jobs.append(JobSpec.model_validate_json(line))
            except ValidationError as err:
                raise InvalidInput(f"{path}:{n}: {str(err).splitlines()[0]}") from err
    return jobs


def pieces_of(spec: JobSpec, fleet: FleetSpec, policy: Policy) -> list[float]:
    """A job's pieces (audio seconds), cut as the workers cut it: `plan_segments` on its chunks."""
    total = spec.size_audio_s
    if policy is Policy.FIFO:
        return [total]
    n_chunks = max(1, round(total / CHUNK_AUDIO_S))
    chars = [int(total * CHARS_PER_AUDIO_S / n_chunks)] * n_chunks
    spans = plan_segments(chars, fleet.segment_chars)
    return [total * (end - first) / n_chunks for first, end, _ in spans] or [total]


def simulate(fleet: FleetSpec, workload: list[JobSpec], policy: Policy) -> PolicyResult:
    """Run `workload` on `fleet` under `policy` to the last job's end."""
    cards = [c for c in fleet.card for _ in range(c.count)]
    sim = _Sim(fleet, policy, idle=list(range(len(cards))))
    jobs = [_Job(spec, n, pieces_of(spec, fleet, policy)) for n, spec in
            enumerate(sorted(workload, key=lambda j: j.arrival_s))]
    for job in jobs:
        job.left = len(job.pieces)
        heapq.heappush(sim.events, (job.spec.arrival_s, next(sim.seq), "arrive", job.order))
    typical = fleet_speed([c.speed_x for c in cards])
    while sim.events:
        sim.now = sim.events[0][0]
        while sim.events and sim.events[0][0] == sim.now:  # everything at this instant, then the choices
            _, _, kind, ref = heapq.heappop(sim.events)
            if kind == "arrive":
                sim.waiting[jobs[ref].spec.priority][ref] = jobs[ref]
            else:
                card, job_order = divmod(ref, len(jobs))
                sim.idle.append(card)
                _piece_done(sim, jobs[job_order])
        _dispatch(sim, cards, jobs, typical)
    makespan = max((j.finished_s for j in jobs), default=0.0)
    return PolicyResult(str(policy), makespan, _p95_by_class(jobs), _utilisation(sim, cards, makespan))


def _piece_done(sim: _Sim, job: _Job) -> None:
    job.left -= 1
    if job.left == 0:
        job.finished_s = sim.now + sim.fleet.assembly_s_per_audio_s * job.spec.size_audio_s


def _dispatch(sim: _Sim, cards: list[CardSpec], jobs: list[_Job], typical: float | None) -> None:
    """Every idle card takes the piece `choose` gives it, in the order the cards became idle (as workers
    ask the broker: no card is favoured)."""
    while sim.idle and any(sim.waiting.values()):
        card = sim.idle.pop(0)
        speed = cards[card].speed_x if sim.policy is Policy.CARD_AWARE else None
        # as a worker's SQL read: the oldest pieces of the highest priority first, at most the window
        window = list(itertools.islice(itertools.chain.from_iterable(
            sim.waiting[p].values() for p in sorted(sim.waiting, reverse=True)), CANDIDATES_WINDOW))
        pick = choose([Candidate(str(j.order), j.spec.priority, j.order, j.pieces[0], sum(j.pieces))
                       for j in window], speed, typical)
        assert pick is not None
        job = jobs[int(pick.key)]
        audio_s = job.pieces.pop(0)
        if not job.pieces:
            del sim.waiting[job.spec.priority][job.order]
        took = sim.fleet.piece_overhead_s + audio_s / cards[card].speed_x
        sim.busy_s[card] += took
        heapq.heappush(sim.events, (sim.now + took, next(sim.seq), "done", card * len(jobs) + job.order))


def _p95_by_class(jobs: list[_Job]) -> dict[str, float]:
    by_class: dict[str, list[float]] = defaultdict(list)
    for job in jobs:
        by_class[job.spec.job_class].append(job.finished_s - job.spec.arrival_s)
    return {name: _percentile(sorted(values), 0.95) for name, values in sorted(by_class.items())}


def _percentile(values: list[float], p: float) -> float:
    """Linear interpolation between the two values around `p * (n - 1)` (as `stats` computes it)."""
    rank = p * (len(values) - 1)
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def _utilisation(sim: _Sim, cards: list[CardSpec], makespan: float) -> dict[str, float]:
    busy: dict[str, list[float]] = defaultdict(list)
    for n, card in enumerate(cards):
        busy[card.name].append(sim.busy_s[n] / makespan if makespan else 0.0)
    return {name: sum(values) / len(values) for name, values in busy.items()}
