"""Bookkeeping at GPU speed: everything around synthesis, with the model-free `null:` voice.

Through the real path — `ttsfleet submit` of a JSONL, one `ttsfleet worker` subprocess on Redis, on
SQLite and on PostgreSQL — with an engine that makes audio instantly, so what is measured is what a card
that synthesizes in no time would wait for: the broker, the store, the files. Side by side in the same
run: Celery's own solo pool draining no-op tasks on the same Redis (the floor any Celery worker pays per
message). `--checkout PATH` measures another checkout of ttsfleet (its `python -m producer.cli`) with this
same harness, so two versions compare in one run. The last line on stdout is one JSON object
(docs/benchmarks.md, "Bookkeeping at GPU speed").

    python -m bench.bookkeeping [--quick] [--checkout PATH] [--broker-url URL] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.inputs import chapter_text, notice_texts, sentences

ROOT = Path(__file__).resolve().parent.parent
BOOK_CHUNKS = 400
SLOW_FLOOR = 1_000  # result files a second below which the run measures the filesystem's state


@dataclass(frozen=True)
class Run:
    """One store's run: submit's marginal seconds for `notices`, the worker's seconds from its first claim
    to its last finish, and (PostgreSQL) the transactions the store committed during the worker's run."""

    notices: int
    submit_s: float
    worker_s: float
    commits: int | None = None

    @property
    def notices_per_s(self) -> float:
        return self.notices / self.worker_s

    @property
    def submit_per_s(self) -> float:
        return self.notices / self.submit_s


class Harness:
    """A checkout's CLI, a scratch folder, a broker and a PostgreSQL server to make databases on."""

    def __init__(self, checkout: Path, work: Path, broker_url: str, pg_url: str) -> None:
        self.checkout, self.work, self.broker_url, self.pg_url = checkout, work, broker_url, pg_url
        self.env = {**os.environ, "PYTHONPATH": str(checkout), "TTSFLEET_VOICE": "null:",
                    "TTSFLEET_BROKER_URL": broker_url, "TTSFLEET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}

    def cli(self, args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "producer.cli", *args], cwd=self.checkout, env=env,
                              capture_output=True, text=True, check=False, **kw)
        if done.returncode != 0:
            raise RuntimeError(f"ttsfleet {args[0]} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return done

    def database(self, kind: str) -> str:
        """A fresh store of `kind` (sqlite, postgresql), migrated by the checkout itself."""
        if kind == "sqlite":
            url = f"sqlite:///{self.work / f'store-{uuid.uuid4().hex[:8]}.db'}"
        else:
            name = f"ttsfleet_bench_{uuid.uuid4().hex[:10]}"
            with create_engine(self.pg_url, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(self.pg_url).set(database=name).render_as_string(hide_password=False)
        self.cli(["migrate", "--database-url", url], self.env)
        return url

    def drop(self, url: str) -> None:
        if url.startswith("postgresql"):
            with create_engine(self.pg_url, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


def prefill(url: str, count: int) -> None:
    """`count` finished notices already in the store (jobs, chunks, metrics rows), named as the bench's own
    JSONL names its jobs, so naming and every index see a store that has served many earlier runs."""
    engine = create_engine(url)
    now = "2026-01-01 00:00:00"
    with engine.begin() as conn:
        for start in range(0, count, 5_000):
            ids = [f"old{n:09d}" for n in range(start, min(start + 5_000, count))]
            conn.execute(text(
                "INSERT INTO jobs (id, idempotency_key, status, priority, queue, voice, format, text, options, "
                "warnings, chars, chunks_total, chunks_done, attempts, created_at, finished_at, output_name, "
                "audio_path, audio_s) VALUES (:id, :id, 'succeeded', 5, 'old', 'null:', 'wav', 'An old notice.', "
                "'{}', '[]', 14, 1, 1, 1, :now, :now, :name, :path, 1.0)"),
                [{"id": i, "now": now, "name": f"notices-{n + 1}.wav", "path": f"/old/{i}.wav"}
                 for n, i in zip(range(start, start + len(ids)), ids, strict=True)])
            conn.execute(text("INSERT INTO chunks (job_id, idx, text, break_after, chars, fp32_redo) VALUES "
                              "(:id, 0, 'An old notice.', 'sentence', 14, false)"), [{"id": i} for i in ids])
            conn.execute(text(
                "INSERT INTO job_metrics (job_id, worker_id, voice, card, backend, dtype, chars, chunks, audio_s, "
                "synth_s, queue_wait_s, latency_s, oom_retries, fp32_fallbacks, batches, attempts, finished_at) "
                "VALUES (:id, 'old', 'null:', 'CPU', 'cpu', 'float32', 14, 1, 1.0, 0.0, 0.1, 0.2, 0, 0, 1, 1, :now)"),
                [{"id": i, "now": now} for i in ids])
    if url.startswith("postgresql") and count:
        # A store that gathered these jobs over months was analyzed by autovacuum long ago; filled in seconds,
        # its first autovacuum and analyze would run inside the measured stage instead.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def commits(url: str) -> int:
    """Transactions PostgreSQL committed in the database so far (pg_stat_database), stats flushed first."""
    admin = create_engine(url)
    with admin.connect() as conn:  # this read itself ends in a rollback: it is not counted
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        found = conn.execute(text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
        value = int(found.scalar() or 0)
    admin.dispose()
    return value


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def notices(count: int) -> list[str]:
    """`count` distinct notices: the bench's 100, numbered (the same text twice would be one job)."""
    base = notice_texts()
    return [f"Notice {n + 1}. {base[n % len(base)]}" for n in range(count)]


def submit(h: Harness, url: str, queue: str, path: Path) -> float:
    """Wall seconds of `ttsfleet submit PATH` (jobs into `url`, messages to `queue`)."""
    env = {**h.env, "TTSFLEET_DATABASE_URL": url, "TTSFLEET_QUEUE": queue, "TTSFLEET_OUTPUT_DIR": str(h.work / "out")}
    started = time.perf_counter()
    h.cli(["submit", str(path), "--json"], env, timeout=900)
    return time.perf_counter() - started


def drain(h: Harness, url: str, queue: str, expected: int, out: Path, timeout_s: float = 900) -> float:
    """Start one worker on `queue`, wait until `expected` jobs of the queue ended, stop it; the seconds from
    its first claim to its last finish (the store's own timestamps)."""
    env = {**h.env, "TTSFLEET_DATABASE_URL": url, "TTSFLEET_QUEUES": queue, "TTSFLEET_OUTPUT_DIR": str(out)}
    log = open(h.work / f"worker-{queue}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "producer.cli", "worker", "--name", queue, "--loglevel",
                             "WARNING"], cwd=h.checkout, env=env, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                ended = conn.execute(text("SELECT count(*) FROM jobs WHERE queue = :q AND status IN "
                                          "('succeeded', 'failed', 'cancelled')"), {"q": queue}).scalar()
            if ended == expected:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the bench worker exited (log: {log.name})")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{expected} jobs not done in {timeout_s:.0f} s (log: {log.name})")
        with engine.connect() as conn:
            failed = conn.execute(text("SELECT count(*) FROM jobs WHERE queue = :q AND status != 'succeeded'"),
                                  {"q": queue}).scalar()
            first, last = conn.execute(text("SELECT min(started_at), max(finished_at) FROM jobs WHERE queue = :q"),
                                       {"q": queue}).one()
        if failed:
            raise RuntimeError(f"{failed} bench jobs did not succeed (log: {log.name})")
        return _seconds(last) - _seconds(first)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        engine.dispose()
        log.close()


def _seconds(stamp: Any) -> float:
    from datetime import datetime

    value = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    return value.timestamp()


def store_run(h: Harness, kind: str, count: int, old: int) -> Run:
    """Submit `count` notices into a store of `kind` holding `old` finished jobs, then drain them."""
    url = h.database(kind)
    try:
        prefill(url, old)
        queue = f"bench-{kind[:2]}-{uuid.uuid4().hex[:6]}"
        one = submit(h, url, f"{queue}-one", write_jsonl(h.work / f"{queue}-one.jsonl", ["A single notice."]))
        path = write_jsonl(h.work / f"{queue}.jsonl", notices(count))
        os.sync()  # each measured step starts with no other stage's writes still going to disk
        many = submit(h, url, queue, path)
        before = commits(url) if kind == "postgresql" else None
        os.sync()
        worker_s = drain(h, url, queue, count, h.work / f"out-{queue}")
        after = commits(url) if kind == "postgresql" else None
        return Run(count, max(many - one, 1e-6), worker_s,
                   None if before is None or after is None else after - before)
    finally:
        h.drop(url)
        set_aside(h.work / f"out-{queue}")


def book_run(h: Harness) -> float:
    """Chunks a second of one 400-chunk text (the bench chapter's sentences, repeated) on SQLite."""
    said = sentences(chapter_text())
    book = " ".join(said[n % len(said)] for n in range(BOOK_CHUNKS))
    url = h.database("sqlite")
    queue = f"bench-book-{uuid.uuid4().hex[:6]}"
    path = h.work / "book.txt"
    path.write_text(book, encoding="utf-8")
    submit(h, url, queue, path)
    os.sync()
    seconds = drain(h, url, queue, 1, h.work / f"out-{queue}")
    engine = create_engine(url)
    with engine.connect() as conn:
        chunks = int(conn.execute(text("SELECT chunks_total FROM jobs WHERE queue = :q"), {"q": queue}).scalar() or 0)
    engine.dispose()
    set_aside(h.work / f"out-{queue}")
    return chunks / seconds


def file_floor(work: Path, count: int) -> float:
    """Notices a second this folder's filesystem takes when nothing but a notice's four result files are
    written and moved into place (a WAV of the bench notices' average length, a manifest, two subtitle
    files): the floor of any worker writing results there."""
    from worker.null_voice import null_samples

    texts = notices(count)
    wav = bytes(44 + 2 * sum(null_samples(t) for t in texts) // len(texts))
    small = [b"x" * 1500, b"y" * 200, b"z" * 200]
    stage, out = work / "floor-stage", work / "floor-out"
    stage.mkdir()
    out.mkdir()
    os.sync()
    started = time.perf_counter()
    for n in range(count):
        for suffix, data in ((".wav", wav), (".manifest.json", small[0]), (".srt", small[1]), (".vtt", small[2])):
            (stage / f"{n}{suffix}").write_bytes(data)
            os.replace(stage / f"{n}{suffix}", out / f"notice-{n}{suffix}")
    seconds = time.perf_counter() - started
    set_aside(stage)
    set_aside(out)
    return count / seconds


def set_aside(folder: Path) -> None:
    """Move a stage's spent files out of the way, to be deleted only once everything is measured. Deleting
    thousands of files between stages slows the next stage's file creation for minutes on an ext4 without
    a journal (this project's machines): its inode allocator skips inodes deleted in the last 60-360 s,
    reading each one's inode block (`recently_deleted`, seen with `perf`: ~60% of a staging run's CPU time
    went there after the previous stage's outputs were removed). A rename frees no inode."""
    if folder.exists():
        spent = folder.parent.parent / "spent"
        spent.mkdir(exist_ok=True)
        folder.rename(spent / f"{folder.parent.name}-{folder.name}-{uuid.uuid4().hex[:6]}")


def celery_noop(h: Harness, count: int) -> float:
    """No-op tasks a second that Celery's solo pool drains (acks_late, prefetch 1) from the same Redis."""
    queue = f"bench-noop-{uuid.uuid4().hex[:6]}"
    done = subprocess.run([sys.executable, "-m", "bench.celery_noop", h.broker_url, queue, str(count)], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"celery no-op contender failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(done.stdout.strip().splitlines()[-1])


STAGES = (("sqlite", 1_000), ("postgresql", 1_000), ("postgresql", 100_000))


def measure(harnesses: list[Harness], count: int) -> list[dict[str, Any]]:
    """Every stage for each harness, the harnesses taking turns stage by stage (so two checkouts see the
    same load); one result object a harness."""
    runs: list[dict[tuple[str, int], Run]] = [{} for _ in harnesses]
    books: list[float] = []
    for kind, old in STAGES:
        for n, h in enumerate(harnesses):
            runs[n][(kind, old)] = run = store_run(h, kind, count, old)
            print(f"{h.checkout.name}: {kind}, {old:,} stored: submit {run.submit_per_s:.0f}/s, worker "
                  f"{run.notices_per_s:.0f}/s" + (f", {run.commits / run.notices:.2f} commits/notice"
                                                  if run.commits is not None else ""), file=sys.stderr)
    for h in harnesses:
        books.append(book_run(h))
        print(f"{h.checkout.name}: book {books[-1]:.0f} chunks/s", file=sys.stderr)
    return [_result(h, r, b, count) for h, r, b in zip(harnesses, runs, books, strict=True)]


def _result(h: Harness, runs: dict[tuple[str, int], Run], book: float, count: int) -> dict[str, Any]:
    small, large, sqlite = runs[("postgresql", 1_000)], runs[("postgresql", 100_000)], runs[("sqlite", 1_000)]
    return {
        "checkout": str(h.checkout), "notices": count,
        "null_notices_per_s_sqlite": round(sqlite.notices_per_s, 1),
        "null_notices_per_s_pg": round(small.notices_per_s, 1),
        "null_book_chunks_per_s": round(book, 1),
        "submit_notices_per_s": round(min(sqlite.submit_per_s, small.submit_per_s), 1),
        "submit_notices_per_s_sqlite": round(sqlite.submit_per_s, 1),
        "submit_notices_per_s_pg": round(small.submit_per_s, 1),
        "bookkeeping_ms_per_notice": round(1000 / min(sqlite.notices_per_s, small.notices_per_s), 3),
        "pg_transactions_per_notice": round((small.commits or 0) / count, 3),
        "per_notice_cost_100k_vs_1k": round(max(small.submit_per_s / large.submit_per_s,
                                                small.notices_per_s / large.notices_per_s), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 notices a run instead of 10,000")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the ttsfleet checkout to measure")
    parser.add_argument("--against", type=Path, help="another checkout, measured stage by stage beside it")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where stores and audio go (default: the system's temporary folder)")
    parser.add_argument("--broker-url", default=os.environ.get("TTSFLEET_BROKER_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--pg-url", default=os.environ.get("TTSFLEET_BENCH_PG_URL",
                                                           "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    count = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory(prefix="ttsfleet-bookkeeping-", dir=args.workdir) as scratch:
        checkouts = [args.checkout] + ([args.against] if args.against else [])
        harnesses = [Harness(c.resolve(), Path(scratch) / str(n), args.broker_url, args.pg_url)
                     for n, c in enumerate(checkouts)]
        for h in harnesses:
            h.work.mkdir()
        noop = celery_noop(harnesses[0], 2_000)
        floor = file_floor(harnesses[0].work, count)
        print(f"celery no-op tasks: {noop:.0f}/s; result files alone: {floor:.0f} notices/s", file=sys.stderr)
        if floor < SLOW_FLOOR:
            print(f"warning: this folder's filesystem is slow right now ({floor:.0f} notices' files a second): "
                  "after a mass deletion, wait a few minutes (docs/benchmarks.md)", file=sys.stderr)
        results = measure(harnesses[::-1], count)[::-1]  # the other checkout first in every stage
    slower = min(results[0]["null_notices_per_s_sqlite"], results[0]["null_notices_per_s_pg"])
    result = results[0] | {"celery_noop_tasks_per_s": round(noop, 1), "null_vs_celery_noop": round(slower / noop, 3),
                           "file_floor_notices_per_s": round(floor, 1),
                           "null_vs_file_floor": round(slower / floor, 3), "workdir": str(args.workdir)}
    if args.against:
        other = results[1]
        result["against"] = other
        for key in ("null_notices_per_s_sqlite", "null_notices_per_s_pg", "null_book_chunks_per_s",
                    "submit_notices_per_s"):
            result[f"{key}_vs_against"] = round(result[key] / other[key], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
