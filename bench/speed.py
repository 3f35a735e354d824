"""Speed benchmark: ttsfleet against what users run today, side by side in one run, same voice, same texts.

    python -m bench.speed --quick           # `make bench-quick`: <= 5 min on 2 cores (fewer notices)
    python -m bench.speed                   # `make bench`: every notice, two rounds of each in-process pair
    python -m bench.speed --device cuda:0   # the same on a GPU (Piper and the CLI contenders stay on the CPU)

Texts (bench/texts/): a ~2,800-character chapter and 100 short public notices, written for this bench.
Contenders: Piper's engine in-process (piper-tts `PiperVoice`, sentence by sentence) and `python -m piper`
as a whole process (the chapter once; each notice once); the naive transformers loop; ttsfleet's engine
alone; `ttsfleet run` as a whole process (the chapter; one sentence for the start time); jobs one after
another in one process (memory); jobs through Redis, Celery and SQL to one worker, then one worker with
one thread against two workers with one thread each. Throughput is audio seconds per wall second.
Progress and a table go to stderr; the last line on stdout is one JSON object. A figure not measured is
null, with the reason under "skipped".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bench import contenders as c
from bench import fleet


def main() -> None:
    args = _parse()
    workdir = Path(tempfile.mkdtemp(prefix="ttsfleet-speed-"))
    env = {**c.bench_env(), "TTSFLEET_RUNTIME": args.runtime}
    speeds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    result: dict[str, Any] = {}
    engine = c.start_bench_engine(args.device, args.runtime)
    _log(f"device {engine.device.name} ({engine.device.torch_device}), {engine.policy.dtype}, runtime "
         f"{engine.runtime}, voice {engine.voice_name}; work folder {workdir}")
    _in_process(args, engine, speeds, result)
    _whole_process(args, workdir, env, speeds, result)
    _system(args, workdir, env, engine, speeds, result, skipped)
    result.update(_context(args, engine, skipped, speeds))
    _table(speeds)
    print(json.dumps(result, sort_keys=True))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer notices and one round: <= 5 min on 2 cores")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N [default: cpu]")
    parser.add_argument("--broker-url", default=os.environ.get("TTSFLEET_BROKER_URL", "redis://localhost:6379/0"),
                        help="Redis for the queue contenders [default: $TTSFLEET_BROKER_URL or local db 0]")
    parser.add_argument("--no-queue", action="store_true", help="skip the Redis/Celery contenders")
    parser.add_argument("--runtime", default="auto", help="ttsfleet's runtime: auto, torch or onnxruntime "
                        "(torch: ttsfleet as it was before the ONNX runtime) [default: auto]")
    args = parser.parse_args()
    args.rounds = 1 if args.quick else 2
    args.cli_notices = 10 if args.quick else 100  # `python -m piper` once per notice: ~2 s each here
    args.queue_notices = 24 if args.quick else 100
    return args


def _in_process(args: argparse.Namespace, engine: Any, speeds: dict[str, float], result: dict[str, Any]) -> None:
    """Piper in-process vs the engine on the chapter's sentences, alternating sentence by sentence (the
    ratio over all rounds' summed times), then the chapter as one job; and the naive loop vs the engine on
    the chapter's first sentences (the naive loop is slow; the same sentences for both)."""
    chapter = c.sentences(c.chapter_text())
    piper_s = engine_s = 0.0
    for _ in range(args.rounds):
        piper, alone = c.piper_and_engine_paired(engine, chapter)
        _best(speeds, "piper_in_process", piper)
        _best(speeds, "engine_paired", alone)
        piper_s, engine_s = piper_s + piper.wall_s, engine_s + alone.wall_s
        audio = (piper.audio_s, alone.audio_s)
    result["engine_vs_piper_x"] = (audio[1] / engine_s) / (audio[0] / piper_s)
    _best(speeds, "engine", c.engine_alone(engine, chapter))
    few = chapter[: 8 if args.quick else len(chapter)]
    _best(speeds, "naive", c.naive_loop(few, engine.device.torch_device))
    _best(speeds, "engine_on_naive_texts", c.engine_alone(engine, few))
    result["engine_vs_naive_x"] = speeds["engine_on_naive_texts"] / speeds["naive"]
    if engine.runtime != "torch" and not args.quick:  # what the ONNX runtime buys over ttsfleet on torch
        torch_engine = c.start_bench_engine(args.device, runtime="torch")
        _best(speeds, "engine_torch", c.engine_alone(torch_engine, chapter))
        result["engine_vs_engine_torch_x"] = speeds["engine"] / speeds["engine_torch"]


def _whole_process(args: argparse.Namespace, workdir: Path, env: dict[str, str], speeds: dict[str, float],
                   result: dict[str, Any]) -> None:
    """`python -m piper` and `ttsfleet run` on the chapter (wall time of the whole process, same text),
    `python -m piper` per notice, and `ttsfleet run` on one sentence (start-up)."""
    text = c.chapter_text()
    cli = c.piper_cli([text], workdir)
    run = c.ttsfleet_run(text, workdir, args.device, env)
    speeds["piper_cli_chapter"], speeds["run_chapter"] = cli.speed_x, run.speed_x
    result["piper_cli_chapter_s"], result["run_chapter_s"] = cli.wall_s, run.wall_s
    result["run_vs_piper_cli_x"] = cli.wall_s / run.wall_s
    per_notice = c.piper_cli(c.notice_texts(args.cli_notices), workdir)
    speeds["piper_cli_per_notice"] = per_notice.speed_x
    result["piper_cli_notices"] = per_notice.items
    starts = [c.ttsfleet_run(c.notice_texts(1)[0], workdir, args.device, env).wall_s for _ in range(3)]
    result["start_s"] = statistics.median(starts)
    result["start_runs_s"] = starts


def _system(args: argparse.Namespace, workdir: Path, env: dict[str, str], engine: Any, speeds: dict[str, float],
            result: dict[str, Any], skipped: dict[str, str]) -> None:
    """Memory over 100 jobs in a fresh process, then the queue contenders (when Redis answers)."""
    memory = fleet.memory_creep_process(workdir, env, args.device, args.runtime)
    assert memory.timing is not None
    speeds["jobs_in_process"] = memory.timing.speed_x
    result["memory_jobs"] = len(memory.rss)
    result["memory_creep_bytes"] = memory.creep(memory.rss)
    result["rss_after_job_10_bytes"] = memory.rss[9] if len(memory.rss) >= 10 else None
    result["cuda_memory_creep_bytes"] = memory.creep(memory.cuda)
    if not memory.cuda:
        skipped["cuda_memory_creep_bytes"] = "no CUDA device in this run"
    keys = ("queue_vs_engine_ratio", "queue_vs_piper_per_notice_x", "two_workers_vs_one_x")
    why = "--no-queue given" if args.no_queue else _broker_problem(args.broker_url)
    if why is not None:
        for key in keys:
            result[key], skipped[key] = None, why
        return
    notices = c.notice_texts(args.queue_notices)
    _best(speeds, "engine_on_notices", c.engine_alone(engine, notices))
    for label, workers, threads in (("queue_1_worker", 1, None), ("queue_1_worker_1_thread", 1, 1),
                                    ("queue_2_workers_1_thread", 2, 1)):
        timing = fleet.queue(notices, workdir, env, workers=workers, threads=threads, broker_url=args.broker_url,
                             device=args.device)
        _best(speeds, label, timing)
        if label == "queue_1_worker":  # the engine's best of two, either side of the queue: a fair ratio
            _best(speeds, "engine_on_notices", c.engine_alone(engine, notices))
    result["queue_vs_engine_ratio"] = speeds["queue_1_worker"] / speeds["engine_on_notices"]
    result["queue_vs_piper_per_notice_x"] = speeds["queue_1_worker"] / speeds["piper_cli_per_notice"]
    result["two_workers_vs_one_x"] = speeds["queue_2_workers_1_thread"] / speeds["queue_1_worker_1_thread"]
    result["queue_notices"] = len(notices)


def _broker_problem(url: str) -> str | None:
    """None when Redis at `url` answers a PING, else why not (one line)."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as err:  # any failure means: no queue contenders, and say why
        return f"broker {url} unreachable: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def _context(args: argparse.Namespace, engine: Any, skipped: dict[str, str],
             speeds: dict[str, float]) -> dict[str, Any]:
    try:
        commit: str | None = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
        skipped["commit"] = "not a git checkout"
    return {"device": engine.device.torch_device, "card": engine.device.name, "dtype": str(engine.policy.dtype),
            "voice": engine.voice_name, "backend": str(engine.runtime), "commit": commit, "quick": args.quick,
            "cores": os.cpu_count(), "machine": platform.machine(), "skipped": skipped,
            "speeds_x": {k: round(v, 2) for k, v in speeds.items()},
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ")}


def _best(speeds: dict[str, float], key: str, timing: c.Timing) -> None:
    _log(f"{key}: {timing.audio_s:.1f} s of audio in {timing.wall_s:.2f} s = {timing.speed_x:.1f}x real time")
    speeds[key] = max(speeds.get(key, 0.0), timing.speed_x)


def _table(speeds: dict[str, float]) -> None:
    _log(f"{'contender':28} {'x real time':>11}")
    for key, value in speeds.items():
        _log(f"{key:28} {value:11.1f}")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
