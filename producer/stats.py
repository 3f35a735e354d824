"""Fleet statistics: what each card, dtype, voice and worker delivers, aggregated in the database.

Every figure is computed by one GROUP BY query on SQLite and PostgreSQL alike. Percentiles are exact
and follow PostgreSQL's `percentile_cont` (linear interpolation between the two rows around
`p * (n - 1)`, 0-based); PostgreSQL computes them with `percentile_cont`, SQLite with window functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    Subquery,
    and_,
    case,
    cast,
    func,
    literal_column,
    null,
    nulls_last,
    select,
    union_all,
)

from schemas.db import Store
from schemas.errors import InvalidInput
from schemas.status import JobStatus, WorkerState
from schemas.tables import Job, JobMetrics, Worker, utcnow

GROUP_KEYS = ("card", "dtype", "model", "voice", "worker", "day")
DEFAULT_BY = ("card", "dtype")
NO_WORKER = "-"  # card/dtype/worker of a failed job that no worker ever claimed
# "model" and "voice" are the same column: a voice is a model.
_KEY_COLUMN = {"card": "card", "dtype": "dtype", "model": "voice", "voice": "voice",
               "worker": "worker", "day": "day"}
# (output name, fact column, fraction) of every percentile a row carries.
_PERCENTILES = (
    ("p50_queue_wait_s", "queue_wait_s", 0.5),
    ("p95_queue_wait_s", "queue_wait_s", 0.95),
    ("p50_latency_s", "latency_s", 0.5),
    ("p95_latency_s", "latency_s", 0.95),
    ("p5_job_throughput_x", "job_throughput_x", 0.05),
    ("p95_job_throughput_x", "job_throughput_x", 0.95),
)
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One group of jobs. Sums and ratios cover succeeded jobs; `failed_jobs` counts the failed ones.

    `throughput_x` is total audio seconds over total synthesis seconds (a job weighs by its length);
    `p5/p95_job_throughput_x` are the spread of the per-job ratio. Times in seconds, memory in bytes.
    The quality that throughput was bought at, from the jobs' metrics: `keep_fp32`, the modules their
    policies kept in fp32 (the longest such list in the group), and the group's worst fidelity against
    fp32, `fidelity_mel_db` (highest) and `fidelity_snr_db` (lowest); None where no job's policy was
    measured (fp32 is the reference itself).
    """

    keys: dict[str, str]
    jobs: int
    failed_jobs: int
    chars: int
    audio_s: float
    synth_s: float
    throughput_x: float | None
    chars_per_s: float | None
    p50_queue_wait_s: float | None
    p95_queue_wait_s: float | None
    p50_latency_s: float | None
    p95_latency_s: float | None
    p5_job_throughput_x: float | None
    p95_job_throughput_x: float | None
    peak_mem_bytes: int | None
    oom_retries: int
    fp32_fallbacks: int
    keep_fp32: str = ""
    fidelity_mel_db: float | None = None
    fidelity_snr_db: float | None = None

    @property
    def label(self) -> str:
        return " · ".join(self.keys.values()) or "all"

    def as_dict(self) -> dict[str, Any]:
        """Flat: the grouping keys first, then every figure (the `stats --format json` row)."""
        values = asdict(self)
        return {**values.pop("keys"), **values}


@dataclass(frozen=True, slots=True)
class JobPoint:
    """One succeeded job, for the throughput-against-text-length scatter."""

    keys: dict[str, str]
    chars: int
    throughput_x: float
    latency_s: float


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A registered worker as `ttsfleet workers` shows it; `state` is "lost" when its heartbeat is old."""

    id: str
    host: str
    pid: int
    device: str
    card: str
    capability: str | None
    memory_bytes: int | None
    backend: str
    dtype: str
    tf32: bool
    policy_reason: str
    voice: str
    queues: str
    state: str
    registered_state: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    lost: bool
    details: dict[str, Any] = field(default_factory=dict)
    keep_fp32: str = ""  # the modules its policy keeps in fp32, comma-separated
    fidelity_mel_db: float | None = None  # its policy's fidelity against fp32, measured at start (None: fp32)
    fidelity_snr_db: float | None = None
    fidelity_duration_error: float | None = None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["started_at"] = self.started_at.isoformat() + "Z"
        values["heartbeat_at"] = self.heartbeat_at.isoformat() + "Z"
        return values


def parse_by(value: str | Sequence[str]) -> list[str]:
    """`"card,dtype"` -> `["card", "dtype"]`; an empty value means one row for the whole fleet.

    Raises:
        InvalidInput: an unknown grouping key.
    """
    parts = value.split(",") if isinstance(value, str) else list(value)
    keys = [p.strip().lower() for p in parts if p.strip()]
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise InvalidInput(f"unknown --by key {unknown[0]!r}; choose from {', '.join(GROUP_KEYS)}")
    return list(dict.fromkeys(keys))


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """A naive-UTC instant from an ISO date/time or a relative age ("90m", "24h", "7d", "2w") before now.

    A naive ISO value is taken as UTC (the store's time zone); an aware one is converted to UTC.

    Raises:
        InvalidInput: the value is neither form.
    """
    now = now or utcnow()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = float(relative[1]), relative[2].lower()
        try:
            return now - timedelta(seconds=amount * _UNIT_S[unit])
        except OverflowError as err:  # before year 1: no datetime holds it
            raise InvalidInput(f"time {value!r} reaches back before the year 1; give a shorter age") from err
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise InvalidInput(f"cannot read time {value!r}: use an ISO date/time or an age like 24h, 7d") from err
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError as err:  # 0001-01-01T00:00+05:00 is before the year 1 in UTC
            raise InvalidInput(f"time {value!r} is out of range") from err
    return parsed


def compute_stats(store: Store, by: Sequence[str] = DEFAULT_BY, since: datetime | None = None,
                  until: datetime | None = None) -> list[StatsRow]:
    """Per-group job statistics for jobs finished in `[since, until)` (naive UTC), ordered by the keys.

    Raises:
        InvalidInput: an unknown grouping key.
        StoreUnavailable: the database cannot be reached.
    """
    return _compute(store, parse_by(by), since, until, use_percentile_cont=store.dialect == "postgresql")


def _compute(store: Store, by: list[str], since: datetime | None, until: datetime | None,
             use_percentile_cont: bool) -> list[StatsRow]:
    facts = _facts(store.dialect, since, until)
    group_cols = [facts.c[name] for name in dict.fromkeys(_KEY_COLUMN[k] for k in by)]
    if use_percentile_cont:
        source: Subquery = facts
        pct = [func.percentile_cont(p).within_group(facts.c[col]).label(name)
               for name, col, p in _PERCENTILES]
    else:
        source = _ranked(facts, group_cols)
        pct = [_window_percentile(source, col, p).label(name) for name, col, p in _PERCENTILES]
    keys = [source.c[_KEY_COLUMN[k]].label(f"key_{k}") for k in by]
    s = source.c
    sums = [
        func.sum(s.ok).label("jobs"),
        func.sum(s.failed).label("failed_jobs"),
        func.coalesce(func.sum(s.chars), 0).label("chars"),
        func.coalesce(func.sum(s.audio_s), 0.0).label("audio_s"),
        func.coalesce(func.sum(s.synth_s), 0.0).label("synth_s"),
        func.max(s.peak_mem_bytes).label("peak_mem_bytes"),
        func.coalesce(func.sum(s.oom_retries), 0).label("oom_retries"),
        func.coalesce(func.sum(s.fp32_fallbacks), 0).label("fp32_fallbacks"),
        # A policy's fp32 list only ever grows by appending (decoder, then flow), so the greatest string is
        # the longest list.
        func.max(s.keep_fp32).label("keep_fp32"),
        func.max(s.fidelity_mel_db).label("fidelity_mel_db"),
        func.min(s.fidelity_snr_db).label("fidelity_snr_db"),
    ]
    grouped = [source.c[c.name] for c in group_cols]
    query = select(*keys, *sums, *pct).group_by(*grouped).order_by(*grouped)
    with store.read() as session:
        rows = [_row(by, r._mapping) for r in session.execute(query)]
    # Without GROUP BY keys an empty window still yields one all-NULL row.
    return [r for r in rows if r.jobs or r.failed_jobs]


_ONE = literal_column("1", Integer)  # inlined, so both UNION branches have the same integer type
_ZERO = literal_column("0", Integer)


def _facts(dialect: str, since: datetime | None, until: datetime | None) -> Subquery:
    """One row per succeeded job (its metrics) and per failed job (counted, no figures)."""
    jm = JobMetrics
    succeeded = select(
        jm.card.label("card"), jm.dtype.label("dtype"), jm.voice.label("voice"),
        func.coalesce(jm.worker_id, NO_WORKER).label("worker"), _day(dialect, jm.finished_at).label("day"),
        jm.finished_at.label("finished_at"),
        _ONE.label("ok"), _ZERO.label("failed"),
        jm.chars.label("chars"), jm.audio_s.label("audio_s"), jm.synth_s.label("synth_s"),
        jm.queue_wait_s.label("queue_wait_s"), jm.latency_s.label("latency_s"),
        case((jm.synth_s > 0, jm.audio_s / jm.synth_s)).label("job_throughput_x"),
        jm.peak_mem_bytes.label("peak_mem_bytes"), jm.oom_retries.label("oom_retries"),
        jm.fp32_fallbacks.label("fp32_fallbacks"), jm.keep_fp32.label("keep_fp32"),
        jm.fidelity_mel_db.label("fidelity_mel_db"), jm.fidelity_snr_db.label("fidelity_snr_db"),
    ).where(*_window(jm.finished_at, since, until))
    failed_at = func.coalesce(Job.finished_at, Job.created_at)
    failed = select(
        func.coalesce(Worker.card, NO_WORKER), func.coalesce(Worker.dtype, NO_WORKER), Job.voice,
        func.coalesce(Job.worker_id, NO_WORKER), _day(dialect, failed_at), failed_at,
        _ZERO, _ONE,
        cast(null(), Integer), cast(null(), Float), cast(null(), Float), cast(null(), Float),
        cast(null(), Float), cast(null(), Float), cast(null(), Integer), cast(null(), Integer),
        cast(null(), Integer), cast(null(), String), cast(null(), Float), cast(null(), Float),
    ).select_from(Job).outerjoin(Worker, Worker.id == Job.worker_id).where(
        Job.status == JobStatus.FAILED, *_window(failed_at, since, until))
    return union_all(succeeded, failed).subquery("facts")


def _window(column: Any, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if since is not None:
        clauses.append(column >= since)
    if until is not None:
        clauses.append(column < until)
    return clauses


def _day(dialect: str, column: Any) -> ColumnElement[str]:
    if dialect == "postgresql":
        return func.to_char(column, "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def _ranked(facts: Subquery, group_cols: list[Any]) -> Subquery:
    """The facts plus, per percentile column, each row's 0-based rank and the group's non-null count."""
    partition = group_cols or None
    extra = []
    for col in dict.fromkeys(col for _, col, _ in _PERCENTILES):
        value = facts.c[col]
        # NULLs rank last, so ranks 0..n-1 are exactly the non-null values (PostgreSQL ignores NULLs too).
        rank = func.row_number().over(partition_by=partition, order_by=nulls_last(value.asc())) - 1
        extra += [rank.label(f"rn_{col}"), func.count(value).over(partition_by=partition).label(f"n_{col}")]
    return select(facts, *extra).subquery("ranked")


def _window_percentile(ranked: Subquery, col: str, p: float) -> ColumnElement[float]:
    """percentile_cont(p) as an aggregate over ranked rows: v[lo] + (pos - lo) * (v[hi] - v[lo])."""
    value, rank = ranked.c[col], ranked.c[f"rn_{col}"]
    pos = literal_column(repr(float(p)), Float) * (ranked.c[f"n_{col}"] - 1)
    # lo = floor(pos), hi = ceil(pos), written as comparisons so no dialect needs floor/ceil.
    is_lo = and_(rank <= pos, rank > pos - 1)
    is_hi = and_(rank >= pos, rank < pos + 1)
    lo_v = func.max(case((is_lo, value)))
    hi_v = func.max(case((is_hi, value)))
    frac = func.max(case((is_lo, pos - rank)))
    return lo_v + frac * (hi_v - lo_v)


def _row(by: list[str], values: Mapping[Any, Any]) -> StatsRow:
    synth_s = float(values["synth_s"] or 0.0)
    audio_s = float(values["audio_s"] or 0.0)
    chars = int(values["chars"] or 0)
    figures = {name: _opt_float(values[name]) for name, _, _ in _PERCENTILES}
    return StatsRow(
        keys={k: str(values[f"key_{k}"]) for k in by},
        jobs=int(values["jobs"] or 0), failed_jobs=int(values["failed_jobs"] or 0), chars=chars,
        audio_s=audio_s, synth_s=synth_s,
        throughput_x=audio_s / synth_s if synth_s > 0 else None,
        chars_per_s=chars / synth_s if synth_s > 0 else None,
        peak_mem_bytes=None if values["peak_mem_bytes"] is None else int(values["peak_mem_bytes"]),
        oom_retries=int(values["oom_retries"] or 0), fp32_fallbacks=int(values["fp32_fallbacks"] or 0),
        keep_fp32=str(values["keep_fp32"] or ""), fidelity_mel_db=_opt_float(values["fidelity_mel_db"]),
        fidelity_snr_db=_opt_float(values["fidelity_snr_db"]), **figures,
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def job_points(store: Store, by: Sequence[str] = DEFAULT_BY, since: datetime | None = None,
               until: datetime | None = None, limit: int = 20_000) -> list[JobPoint]:
    """The newest `limit` succeeded jobs in `[since, until)`, for the throughput scatter.

    Raises:
        StoreUnavailable: the database cannot be reached.
    """
    keys = parse_by(by)
    facts = _facts(store.dialect, since, until)
    cols = [facts.c[_KEY_COLUMN[k]].label(f"key_{k}") for k in keys]
    query = (select(*cols, facts.c.chars, facts.c.job_throughput_x, facts.c.latency_s)
             .where(facts.c.ok == 1, facts.c.job_throughput_x.is_not(None))
             .order_by(facts.c.finished_at.desc()).limit(limit))
    with store.read() as session:
        rows = session.execute(query).all()
    return [JobPoint(keys={k: str(r._mapping[f"key_{k}"]) for k in keys}, chars=int(r.chars),
                     throughput_x=float(r.job_throughput_x), latency_s=float(r.latency_s)) for r in rows]


def list_workers(store: Store, lost_after_s: float = 60.0, now: datetime | None = None) -> list[WorkerView]:
    """Every registered worker, by host then id; one not stopped and silent over `lost_after_s` is lost.

    Raises:
        StoreUnavailable: the database cannot be reached.
    """
    now = now or utcnow()
    with store.read() as session:
        workers = session.scalars(select(Worker).order_by(Worker.host, Worker.id)).all()
    return [_worker_view(w, lost_after_s, now) for w in workers]


def _worker_view(w: Worker, lost_after_s: float, now: datetime) -> WorkerView:
    age_s = max(0.0, (now - w.heartbeat_at).total_seconds())
    registered = WorkerState(w.state).value
    lost = registered != WorkerState.STOPPED and age_s > lost_after_s
    return WorkerView(
        id=w.id, host=w.host, pid=w.pid, device=w.device, card=w.card, capability=w.capability,
        memory_bytes=w.memory_bytes, backend=w.backend, dtype=w.dtype, tf32=bool(w.tf32),
        policy_reason=w.policy_reason, voice=w.voice, queues=w.queues,
        state="lost" if lost else registered, registered_state=registered,
        started_at=w.started_at, heartbeat_at=w.heartbeat_at, heartbeat_age_s=age_s, lost=lost,
        details=dict(w.details or {}), keep_fp32=w.keep_fp32 or "", fidelity_mel_db=w.fidelity_mel_db,
        fidelity_snr_db=w.fidelity_snr_db, fidelity_duration_error=w.fidelity_duration_error,
    )
