"""Segment leases measured on this machine, side by side with what the fleet simulator predicts.

CPU workers as users run them: the bundled voice `piper:joe` on ONNX Runtime, one thread each (`--threads
1`), one chunk per call, through Redis, Celery and a SQLite store. Three fleets start together (one worker;
two with segment leases; two with segments off, job-level FIFO) and each round runs, side by side:
  1. one 40-chunk job on one worker, then on two (segment leases): the speed-up;
  2. one long job (80 chunks) and 50 one-sentence notices on two workers, job-level FIFO against segment
     leases;
  3. the simulator (`producer/simulate.py`), calibrated on the round's one-worker run, predicts the others.
Each run notes the load average and the CPU its workers used ("cores used"): on a shared machine the
speed-up is bounded by the cores the workers get. Then the simulator plans a 100-card mixed fleet
(bench/simulate/fleet.toml) on a large generated backlog. The last line printed is one JSON object.

    python -m bench.segments [--quick] [--rounds 3] [--segment-chunks 4] [--voice VOICE]
                             [--broker-url redis://127.0.0.1:6379/3]
"""

from __future__ import annotations

import argparse
import json
import os
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
from statistics import median
from typing import Any

from bench.fleet import _wait_done, _wait_ready
from producer.simulate import CardSpec, FleetSpec, JobSpec, Policy, load_fleet, simulate
from schemas.settings import DEFAULT_VOICE

SENTENCE = "The river rose slowly through the night, and by morning the lower road was under water"
# A notice is one sentence, one chunk (about 2.5 s of audio): the long job, not the notices, sets FIFO's
# makespan, the case segment leases are for (docs/fleet.md).
NOTICE = "the north gate closes at six tonight"
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


def run(f: Fleet, voice: str, texts: list[tuple[str, int]]) -> Run:
    """Submit `texts` (text, priority) at once and wait for the last job: seconds, ids, load and CPU."""
    from producer.submit import submit
    from schemas.broker import Publisher
    from schemas.messages import JobRequest
    from schemas.settings import ProducerSettings

    settings = ProducerSettings(database_url=f.url, output_dir=f.out, broker_url=f.broker_url, queue=f.queue,
                                voice=voice, max_chunk_chars=120, voice_dirs=str(f.out.parent / "voices"))
    publisher = Publisher(f.broker_url, f.queue)
    load, cpu_before = os.getloadavg()[0], _cpu_s(f.procs)
    started = time.perf_counter()
    try:
        jobs = submit([JobRequest(text=t, voice=voice, priority=p) for t, p in texts], settings, f.store,
                      publisher=publisher, force=True)
    finally:
        publisher.close()
    ids = [job.id for job in jobs]
    _wait_done(f.store, ids, f.procs)
    elapsed = time.perf_counter() - started
    return Run(elapsed, ids, load, _cpu_s(f.procs) - cpu_before)


@dataclass
class Run:
    """One measured run: seconds from submit to the last job done, its job ids, the 1-minute load average
    when it started, and the CPU seconds its workers used (user + system; NaN where /proc cannot be read)."""

    seconds: float
    ids: list[str]
    load: float
    worker_cpu_s: float


def _cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds the worker processes have used so far (Linux /proc; NaN elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in procs:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


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
    parser.add_argument("--quick", action="store_true", help="one round, smaller planning workload")
    parser.add_argument("--voice", default=DEFAULT_VOICE, help="voice of the measured runs [%(default)s: the "
                        "bundled Piper voice, on ONNX Runtime as a CPU worker runs it]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four runs, side by side [3]")
    parser.add_argument("--segment-chunks", type=int, default=4, help="chunks per segment of the long job [4]")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ttsfleet-seg-") as tmp:
        report = measure(Path(tmp), args.voice, args.broker_url, 1 if args.quick else args.rounds,
                         args.segment_chunks)
    report["plan_100_cards"] = plan(1000 if not args.quick else 200, 4000 if not args.quick else 1000)
    print(json.dumps(report))


def measure(workdir: Path, voice: str, broker_url: str, rounds: int, segment_chunks: int) -> dict[str, Any]:
    """`rounds` rounds of the four runs on three fleets started together (idle workers block on the broker
    and use no CPU), so each round's runs see about the same load; the order flips every round."""
    long_text = _long_text(40)
    # The mix's long job is twice as long, so that it, not the 50 notices, sets FIFO's makespan (with the
    # 40-chunk job the notices' work about equals it and both policies tie: docs/fleet.md).
    mix_text = _long_text(80)
    notices = [(f"Notice {n}: {NOTICE}.", 5) for n in range(50)]
    segment_chars = segment_chunks * len(SENTENCE)
    with (fleet(workdir, voice, broker_url, 1, segment_chars) as one,
          fleet(workdir, voice, broker_url, 2, segment_chars) as two,
          fleet(workdir, voice, broker_url, 2, 0) as fifo):
        steps = [("one_worker", one, [(long_text, 5)]), ("two_workers", two, [(long_text, 5)]),
                 ("mix_fifo", fifo, [(mix_text, 5), *notices]), ("mix_segments", two, [(mix_text, 5), *notices])]
        run(one, voice, [(f"{NOTICE}.", 5)])  # warm-up: first queries, file system, voice caches
        run(two, voice, [(f"{NOTICE}.", 5)])
        run(fifo, voice, [(f"{NOTICE}.", 5)])
        results = []
        for n in range(rounds):
            runs = {key: run(f, voice, texts) for key, f, texts in (steps if n % 2 == 0 else steps[::-1])}
            results.append(_round(n, runs, {"one_worker": one, "two_workers": two, "mix_fifo": fifo,
                                            "mix_segments": two}, len(notices)))
    return _summary(results)


def _long_text(sentences: int) -> str:
    """A long job of `sentences` chunks (one sentence of about 100 characters each)."""
    return ". ".join(f"{SENTENCE} number {n}" for n in range(sentences)) + "."


def _round(n: int, runs: dict[str, Run], fleets: dict[str, Fleet], notices: int) -> dict[str, Any]:
    """One round's figures, and what the simulator predicts for it once calibrated on its one-worker run."""
    one = runs["one_worker"]
    speed_x, audio_s, chunks = measured_speed(fleets["one_worker"], one.ids)
    pieces = _segments(fleets["one_worker"], one.ids)
    # Calibrated on the one-worker run alone: its speed and the time it spent outside synthesis, per lease.
    overhead_s = max(0.0, (one.seconds - audio_s / speed_x) / pieces)
    speeds = {key: measured_speed(fleets[key], r.ids)[0] for key, r in runs.items()}
    _, notice_audio_s, _ = measured_speed(fleets["mix_segments"], runs["mix_segments"].ids[1:])
    _, mix_audio_s, _ = measured_speed(fleets["mix_segments"], runs["mix_segments"].ids[:1])
    long_job = JobSpec.model_validate({"class": "long", "audio_s": audio_s})
    notice = JobSpec.model_validate({"class": "notice", "audio_s": notice_audio_s / notices})
    mix = [JobSpec.model_validate({"class": "long", "audio_s": mix_audio_s}), *[notice] * notices]

    def predict(key: str, jobs: list[JobSpec], policy: Policy) -> float:
        # The card's speed as `stats` reports it for that run (audio over synthesis seconds of its chunks):
        # on a shared machine two workers slow each other down, and that is what the run's stats show.
        card = CardSpec(name="cpu 1 thread", count=2, speed_x=speeds[key])
        spec = FleetSpec(card=[card], piece_overhead_s=overhead_s, segment_chars=int(audio_s * 15 / pieces))
        return simulate(spec, jobs, policy).makespan_s

    predicted = {"two_workers": predict("two_workers", [long_job], Policy.SEGMENTS),
                 "mix_segments": predict("mix_segments", mix, Policy.SEGMENTS),
                 "mix_fifo": predict("mix_fifo", mix, Policy.FIFO)}
    measured = {key: r.seconds for key, r in runs.items()}
    figures = {
        "measured_s": measured, "load": {k: r.load for k, r in runs.items()},
        "cores_used": {k: r.worker_cpu_s / r.seconds for k, r in runs.items()}, "speeds_x": speeds,
        "predicted_s": predicted, "prediction_error": {k: predicted[k] / measured[k] - 1 for k in predicted},
        "speedup_two_workers": measured["one_worker"] / measured["two_workers"],
        "mix_fifo_over_segments": measured["mix_fifo"] / measured["mix_segments"],
        "overhead_s_per_lease": overhead_s, "segments": pieces, "chunks": chunks, "audio_s": audio_s,
    }
    loads = "/".join(f"{r.load:.1f}" for r in runs.values())
    print(f"round {n + 1} (load {loads}): 40-chunk job ({chunks} chunks, {audio_s:.0f} s audio, {pieces} segments, "
          f"{speed_x:.1f}x on one thread) 1 worker {measured['one_worker']:.1f} s, 2 workers "
          f"{measured['two_workers']:.1f} s: {figures['speedup_two_workers']:.2f}x; mix FIFO "
          f"{measured['mix_fifo']:.1f} s, segments {measured['mix_segments']:.1f} s: "
          f"{figures['mix_fifo_over_segments']:.2f}x")
    print("  cores used: " + ", ".join(f"{k} {v:.2f}" for k, v in figures["cores_used"].items())
          + "; speed per worker: " + ", ".join(f"{k} {v:.1f}x" for k, v in speeds.items()))
    print("  simulator: " + ", ".join(f"{k} {predicted[k]:.1f} s ({e:+.0%})"
                                      for k, e in figures["prediction_error"].items()))
    return figures


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    speedups = [r["speedup_two_workers"] for r in rounds]
    mixes = [r["mix_fifo_over_segments"] for r in rounds]
    worst = max(abs(e) for r in rounds for e in r["prediction_error"].values())
    print(f"median of {len(rounds)} rounds: 2 workers {median(speedups):.2f}x faster than 1 "
          f"(range {min(speedups):.2f}-{max(speedups):.2f}); mix FIFO / segments {median(mixes):.2f}x "
          f"(range {min(mixes):.2f}-{max(mixes):.2f}); worst simulator error {worst:.0%}")
    return {"rounds": rounds, "speedup_two_workers": median(speedups), "mix_fifo_over_segments": median(mixes),
            "worst_prediction_error": worst}


def plan(books: int, notices: int) -> dict[str, Any]:
    """The 100-card fleet of bench/simulate/fleet.toml on a generated backlog, for each policy."""
    spec = load_fleet(ROOT / "bench" / "simulate" / "fleet.toml")
    workload = plan_workload(books, notices)
    results = {str(p): simulate(spec, workload, p).__dict__ for p in Policy}
    for name, r in results.items():
        book_h = r["p95_latency_s"]["book"] / 3600
        print(f"{name:>10}: makespan {r['makespan_s'] / 3600:.2f} h, p95 book {book_h:.2f} h, "
              f"p95 notice {r['p95_latency_s']['notice']:.0f} s, utilisation "
              + ", ".join(f"{k} {v:.0%}" for k, v in r["utilisation"].items()))
    return results


if __name__ == "__main__":
    main()
