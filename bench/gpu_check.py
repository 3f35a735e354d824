"""The whole GPU check in one run: what ttsfleet promises about cards, measured on the card that is here.

    python -m bench.gpu_check --device cuda:0 --out DIR       # full size: well inside 8 minutes on an H100
    python -m bench.gpu_check --device cpu --small --out DIR  # CI size, runs anywhere in about a minute
    python -m bench.gpu_check --wer DIR [--out NEW]           # word error rate of DIR's audio, here

Steps (each records ok / failed / skipped and why, and the run goes on past a failure):
 1. doctor: `ttsfleet doctor --json` on the real device; the policy and its reason;
 2. canary: an engine started under every precision the device accepts (the canary and the fidelity check
    run at start: a mixed policy keeps the decoder in fp32), and the refusal of the others;
 3. engines: every accepted precision at batch sizes 1, 2, 4, ... up to the largest the token budget
    allows: audio-seconds per second and peak memory next to the policy's measured fidelity against fp32;
    plus the naive per-sentence VitsModel loop;
 3b. fidelity (CUDA): per module and low precision, the fidelity against strict fp32 on the card;
 4. memory_probe (CUDA): the bytes-per-token probe's prediction against the peak seen on a long chapter;
 5. oom (CUDA): a real out-of-memory (the process's share of device memory capped) recovered from, with
    the same audio length per chunk as an uncapped run (noise off);
 6. jobs: N jobs through `ttsfleet run --device D` (embedded, SQLite in a temporary folder), device
    memory read after each (creep);
 7. intelligibility: pocketsphinx word error rate of a paragraph spoken under each accepted precision
    (its audio is written to the output folder; without pocketsphinx, `--wer DIR` measures it later).
Writes results.json and results.md into the output folder after every step, so a killed run keeps what
it measured. Exit status: 0 when no step failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("bf16", "fp16", "fp32")
DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class Sizes:
    """How much each step does: chunk counts, timing repeats (best kept), jobs."""

    engine_chunks: int
    repeats: int
    chapter_chunks: int
    oom_chunks: int
    jobs: int


FULL = Sizes(engine_chunks=64, repeats=2, chapter_chunks=240, oom_chunks=48, jobs=100)
SMALL = Sizes(engine_chunks=4, repeats=1, chapter_chunks=10, oom_chunks=8, jobs=5)


@dataclass
class Outcome:
    """What a step returns: status "ok" | "failed" | "skipped", why (one line; empty when ok), data."""

    status: str
    why: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """Everything the steps share. `engines`: precision name -> a started Engine (noise off)."""

    device_spec: str
    voice: str
    out: Path
    work: Path
    sizes: Sizes
    small: bool
    deadline: float  # time.monotonic() after which no new step starts
    device: Any = None
    auto_precision: str | None = None
    engines: dict[str, Any] = field(default_factory=dict)

    @property
    def voices_cache(self) -> Path:
        return Path(os.environ.get("TTSFLEET_VOICES_CACHE_DIR") or self.work / "voices-cache")

    def load_voice(self) -> Any:
        """A fresh copy of the voice (fp32, on the CPU): a name such as piper:joe, or a folder."""
        from worker.voices import load_voice

        return load_voice(self.voice, self.voices_cache)

    def auto_engine(self) -> tuple[str, Any]:
        """(precision, engine) of the device's own policy; raises RuntimeError when it did not start."""
        name = self.auto_precision
        if name is None or name not in self.engines:
            raise RuntimeError("no engine under the device's own policy started (see the canary step)")
        return name, self.engines[name]


Step = Callable[[Check], Outcome]


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.wer is not None:
        from bench.gpu_wer import finish_from_folder

        sys.exit(finish_from_folder(args.wer, Path(args.out) if args.out else args.wer))
    out = Path(args.out or os.environ.get("OUT") or "gpu-check-out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="ttsfleet-gpu-check-"))
    check = Check(device_spec=args.device, voice=args.voice, out=out, work=work,
                  sizes=SMALL if args.small else FULL, small=args.small,
                  deadline=time.monotonic() + args.budget_s)
    results = run_all(check, steps())
    sys.exit(1 if any(step["status"] == "failed" for step in results["steps"]) else 0)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="cpu, cuda, cuda:N [default: cuda:0]")
    parser.add_argument("--voice", default="piper:joe", help="voice name or folder [default: piper:joe]")
    parser.add_argument("--out", help="where results.json, results.md and the audio go [default: $OUT, else "
                                      "gpu-check-out; with --wer: DIR itself]")
    parser.add_argument("--work", help="scratch folder (store, job audio, voice cache) [default: a new temp dir]")
    parser.add_argument("--small", action="store_true", help="CI size: a few chunks and jobs, one repeat")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="no step starts after this many seconds [default: 420]")
    parser.add_argument("--wer", type=Path, metavar="DIR",
                        help="only measure the word error rate of DIR's audio and update DIR's results")
    return parser.parse_args(argv)


def steps() -> list[tuple[str, Step]]:
    """The steps in order (name, function)."""
    from bench import gpu_fidelity, gpu_jobs, gpu_memory, gpu_steps, gpu_wer

    return [("doctor", gpu_steps.doctor_step), ("canary", gpu_steps.canary_step),
            ("engines", gpu_steps.engines_step), ("fidelity", gpu_fidelity.fidelity_step),
            ("memory_probe", gpu_memory.memory_probe_step),
            ("oom", gpu_memory.oom_step), ("jobs", gpu_jobs.jobs_step),
            ("intelligibility", gpu_wer.intelligibility_step)]


def run_all(check: Check, plan: list[tuple[str, Step]]) -> dict[str, Any]:
    """Run every step, recording each outcome and rewriting the results files after each one."""
    from bench.gpu_report import environment, write_results

    started = time.monotonic()
    results: dict[str, Any] = {"schema": 1, "mode": "small" if check.small else "full",
                               "device_spec": check.device_spec, "voice": check.voice,
                               "environment": environment(check.device_spec), "steps": []}
    for number, (name, step) in enumerate(plan, 1):
        _say(f"[{number}/{len(plan)}] {name} ...")
        record = run_step(check, name, step)
        results["steps"].append(record)
        results["total_s"] = round(time.monotonic() - started, 1)
        write_results(results, check.out)
        _say(f"[{number}/{len(plan)}] {name}: {record['status']} in {record['seconds']:.1f} s"
             + (f" ({record['why']})" if record["why"] else ""))
    _say(f"done in {results['total_s']:.0f} s: results in {check.out}")
    return results


def run_step(check: Check, name: str, step: Step) -> dict[str, Any]:
    """One step as a record {step, status, why, seconds, data}; an exception is a failed step."""
    started = time.monotonic()
    if started > check.deadline:
        outcome = Outcome("skipped", "out of the time budget (--budget-s)")
    else:
        try:
            outcome = step(check)
        except Exception as err:  # keep going: the next step may still work
            traceback.print_exc(file=sys.stderr)
            outcome = Outcome("failed", first_line(err))
    return {"step": name, "status": outcome.status, "why": outcome.why,
            "seconds": round(time.monotonic() - started, 2), "data": outcome.data}


def first_line(err: BaseException) -> str:
    """`Type: first line of the message`."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def ttsfleet_command() -> list[str]:
    """The `ttsfleet` command as this interpreter runs it (no console script needed)."""
    return [sys.executable, "-c", "from producer.cli import main; main()"]


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
