"""Segment leases measured on this machine, side by side with what the fleet simulator predicts.

CPU workers with one thread each, through Redis, Celery and a SQLite store:
  1. one 40-chunk job on one worker, then on two (segment leases): the speed-up;
  2. one long job and 50 notices on two workers, job-level FIFO (segments off) against segment leases;
  3. the simulator (`producer/simulate.py`), fed the speed measured in run 1, predicts runs 1 and 2.
Then the simulator plans a 100-card mixed fleet (bench/simulate/fleet.toml) on a large generated backlog.
The last line printed is one JSON object with every figure.

    python -m bench.segments [--quick] [--voice VOICE] [--broker-url redis://127.0.0.1:6379/3]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fleet import _wait_done, _wait_ready
from producer.simulate import CardSpec, FleetSpec, JobSpec, Policy, load_fleet, simulate

SENTENCE = "The river rose slowly through the night, and by morning the lower road was under water"
NOTICE = "The north gate closes at six tonight."
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Fleet:
    store: Any
    url: str
    out: Path
    queue: str
    broker_url: str
    procs: list[subprocess.Popen[bytes]]


@contextmanager
def fleet(workdir: Path, voice: str, broker_url: str, workers: int, segment_chars: int) -> Iterator[Fleet]:
    """`workers` CPU worker subprocesses (one thread each) on a private queue and a fresh SQLite store."""
    from schemas.db import open_store

    tag = uuid.uuid4().hex[:8]
    url, out = f"sqlite:///{workdir / f'seg-{tag}.db'}", workdir / f"seg-{tag}"
    store = open_store(url)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TTSFLEET_BROKER_URL": broker_url,
           "TTSFLEET_DATABASE_URL": url, "TTSFLEET_OUTPUT_DIR": str(out), "TTSFLEET_QUEUES": f"seg-{tag}",
           "TTSFLEET_DEVICE": "cpu", "TTSFLEET_VOICE": voice, "TTSFLEET_SEGMENT_CHARS": str(segment_chars),
           "TTSFLEET_HEARTBEAT_S": "2", "HOME": str(Path.home()), "TTSFLEET_VOICE_DIRS": str(workdir / "voices")}
    procs = [subprocess.Popen([sys.executable, "-m", "producer.cli", "worker", "--name", f"seg-{tag}-{n}",
                               "--threads", "1", "--loglevel", "WARNING"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(workdir / f"worker-{tag}-{n}.log", "wb"), start_new_session=True)
             for n in range(workers)]
    try:
        _wait_ready(store, procs)
        yield Fleet(store, url, out, f"seg-{tag}", broker_url, procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        store.dispose()


def run(f: Fleet, voice: str, texts: list[tuple[str, int]]) -> tuple[float, list[str]]:
    """Submit `texts` (text, priority) at once; seconds from submit to the last job done, and the ids."""
    from producer.submit import submit
    from schemas.broker import Publisher
    from schemas.messages import JobRequest
    from schemas.settings import ProducerSettings

    settings = ProducerSettings(database_url=f.url, output_dir=f.out, broker_url=f.broker_url, queue=f.queue,
                                voice=voice, max_chunk_chars=120, voice_dirs=str(f.out.parent / "voices"))
    publisher = Publisher(f.broker_url, f.queue)
    started = time.perf_counter()
    try:
        jobs = submit([JobRequest(text=t, voice=voice, priority=p) for t, p in texts], settings, f.store,
                      publisher=publisher, force=True)
    finally:
        publisher.close()
    ids = [job.id for job in jobs]
    _wait_done(f.store, ids, f.procs)
    return time.perf_counter() - started, ids


def measured_speed(f: Fleet, ids: list[str]) -> tuple[float, float, int]:
    """(audio s per synthesis s over the jobs' chunks, their audio seconds, their chunks)."""
    from sqlalchemy import func, select

    from schemas.tables import Chunk

    with f.store.read() as session:
        audio, synth, chunks = session.execute(select(func.sum(Chunk.audio_s), func.sum(Chunk.synth_s),
                                                      func.count()).where(Chunk.job_id.in_(ids))).one()
    return float(audio) / float(synth), float(audio), int(chunks)


def _segments(f: Fleet, ids: list[str]) -> int:
    from sqlalchemy import func, select

    from schemas.tables import Segment

    with f.store.read() as session:
        count = session.scalar(select(func.count()).select_from(Segment).where(Segment.job_id.in_(ids)))
    return max(1, int(count or 0))


def plan_workload(books: int, notices: int, seed: int = 7) -> list[JobSpec]:
    """A backlog of book chapter files (20 min to 12 h of audio each) waiting at once, and notices at a
    higher priority arriving one every 0.5 s."""
    rng = random.Random(seed)
    jobs = [JobSpec.model_validate({"class": "book", "audio_s": rng.uniform(1200, 43200)}) for _ in range(books)]
    return jobs + [JobSpec.model_validate({"class": "notice", "audio_s": rng.uniform(5, 30), "arrival_s": n * 0.5,
                                           "priority": 7}) for n in range(notices)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a lighter random voice, smaller planning workload")
    parser.add_argument("--voice", default=None, help="voice of the measured runs [default: a random VITS "
                        "of about a real voice's cost on a CPU]")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ttsfleet-seg-") as tmp:
        workdir = Path(tmp)
        voice = args.voice or _random_voice(workdir, 128 if args.quick else 256)
        report = measure(workdir, voice, args.broker_url)
    report["plan_100_cards"] = plan(1000 if not args.quick else 200, 4000 if not args.quick else 1000)
    print(json.dumps(report))


def measure(workdir: Path, voice: str, broker_url: str) -> dict[str, Any]:
    long_text = ". ".join(f"{SENTENCE} number {n}" for n in range(40)) + "."
    notices = [(f"{NOTICE} Notice {n}.", 5) for n in range(50)]
    segment_chars = 8 * len(SENTENCE)  # about 8 chunks a segment: 5 or 6 segments for 40 chunks
    with fleet(workdir, voice, broker_url, 1, segment_chars) as one:
        t1, ids = run(one, voice, [(long_text, 5)])
        speed_x, audio_s, chunks = measured_speed(one, ids)
        pieces = _segments(one, ids)
    with fleet(workdir, voice, broker_url, 2, segment_chars) as two:
        t2, two_ids = run(two, voice, [(long_text, 5)])
        t_mix_seg, mix_ids = run(two, voice, [(long_text, 5), *notices])
        _, notice_audio_s, _ = measured_speed(two, mix_ids[1:])
        speeds = {"two_workers_s": measured_speed(two, two_ids)[0], "mix_segments_s": measured_speed(two, mix_ids)[0]}
    with fleet(workdir, voice, broker_url, 2, 0) as fifo:
        t_mix_fifo, fifo_ids = run(fifo, voice, [(long_text, 5), *notices])
        speeds["mix_fifo_s"] = measured_speed(fifo, fifo_ids)[0]
    # Calibrate on run 1 alone: its speed and the time it spent outside synthesis, per lease taken.
    overhead_s = max(0.0, (t1 - audio_s / speed_x) / pieces)
    card = CardSpec(name="cpu 1 thread", speed_x=speed_x)
    long_job = JobSpec.model_validate({"class": "long", "audio_s": audio_s})
    mix = [long_job, *[JobSpec.model_validate({"class": "notice", "audio_s": notice_audio_s / len(notices)})
                       for _ in notices]]

    def predict(key: str, jobs: list[JobSpec], policy: Policy) -> float:
        # The card's speed as `stats` reports it for that run (audio over synthesis seconds of its chunks):
        # on a shared machine two workers slow each other down, and that is what the run's stats show.
        spec = FleetSpec(card=[card.model_copy(update={"count": 2, "speed_x": speeds[key]})],
                         piece_overhead_s=overhead_s, segment_chars=int(audio_s * 15 / pieces))
        return simulate(spec, jobs, policy).makespan_s

    predicted = {"two_workers_s": predict("two_workers_s", [long_job], Policy.SEGMENTS),
                 "mix_segments_s": predict("mix_segments_s", mix, Policy.SEGMENTS),
                 "mix_fifo_s": predict("mix_fifo_s", mix, Policy.FIFO)}
    measured = {"one_worker_s": t1, "two_workers_s": t2, "mix_segments_s": t_mix_seg, "mix_fifo_s": t_mix_fifo}
    errors = {k: predicted[k] / measured[k] - 1 for k in predicted}
    print(f"40-chunk job ({chunks} chunks, {audio_s:.0f} s of audio, {speed_x:.1f}x real time on one thread): "
          f"1 worker {t1:.1f} s, 2 workers {t2:.1f} s: {t1 / t2:.2f}x faster")
    print(f"long job + 50 notices on 2 workers: FIFO {t_mix_fifo:.1f} s, segments {t_mix_seg:.1f} s: "
          f"{t_mix_fifo / t_mix_seg:.2f}x")
    for key, err in errors.items():
        print(f"simulator {key}: predicted {predicted[key]:.1f} s, measured {measured[key]:.1f} s ({err:+.0%})")
    print("speeds measured per run (x real time, per worker): " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items()))
    return {"measured": measured, "predicted": predicted, "prediction_error": errors, "speed_x": speed_x,
            "speeds_x": speeds,
            "overhead_s_per_lease": overhead_s, "speedup_two_workers": t1 / t2,
            "mix_fifo_over_segments": t_mix_fifo / t_mix_seg}


def plan(books: int, notices: int) -> dict[str, Any]:
    """The 100-card fleet of bench/simulate/fleet.toml on a generated backlog, for each policy."""
    spec = load_fleet(ROOT / "examples" / "fleet" / "fleet.toml")
    workload = plan_workload(books, notices)
    results = {str(p): simulate(spec, workload, p).__dict__ for p in Policy}
    for name, r in results.items():
        book_h = r["p95_latency_s"]["book"] / 3600
        print(f"{name:>10}: makespan {r['makespan_s'] / 3600:.2f} h, p95 book {book_h:.2f} h, "
              f"p95 notice {r['p95_latency_s']['notice']:.0f} s, utilisation "
              + ", ".join(f"{k} {v:.0%}" for k, v in r["utilisation"].items()))
    return results


def _random_voice(workdir: Path, width: int) -> str:
    from worker.testing import build_tiny_vits

    return str(build_tiny_vits(workdir / "voices" / "random", width=width))


if __name__ == "__main__":
    main()
