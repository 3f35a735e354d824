"""Engine benchmark: ratios measured side by side in one run, on whatever device is here.

    python -m bench.engine --quick            # tiny random VITS, a few seconds; smoke check of the ratios
    python -m bench.engine                    # the default voice (piper:joe) if it loads, else the tiny one
    python -m bench.engine --voice DIR --device cuda:0 --json

Reports audio-seconds per synthesis-second (x real time) for:
- batched (the engine's token budget) vs one chunk per batch, under the device's policy;
- every precision the device accepts (bf16 / fp16 / fp32; refused ones are listed with the reason). On a
  CPU, bf16 under CPU autocast is added for comparison only: it is not a policy the worker would choose.
Noise is off (deterministic) so every configuration synthesizes exactly the same audio lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

SENTENCES = [
    "The river ran quietly past the old mill.",
    "Nobody remembered when the wheel had last turned, or who had stopped it.",
    "Yes.",
    "In the spring the water rose, and the children came down to watch the ice break up and drift away.",
    "Then it was summer again.",
    "A heron stood in the shallows, patient as a post, waiting for something only it could see.",
    "The miller's daughter kept the key.",
    "She opened the door once a year, swept the floor, and locked it again without a word to anyone.",
]


@dataclass
class Row:
    label: str
    audio_s: float
    synth_s: float
    batches: int
    note: str = ""

    @property
    def speed_x(self) -> float:
        return self.audio_s / self.synth_s if self.synth_s > 0 else float("nan")


def main() -> None:
    args = _parse()
    from worker.device import detect_device

    device = detect_device(args.device)
    voice_source = _voice_source(args)
    chunks = _chunks(args.chunks or (12 if args.quick else 48))
    repeats = args.repeats or (1 if args.quick else 3)
    print(f"device: {device.name} ({device.torch_device}, capability {device.capability_str or '-'}); "
          f"voice: {voice_source}; {len(chunks)} chunks, best of {repeats}", file=sys.stderr)
    batching = _batching_rows(device, voice_source, chunks, repeats)
    precision = _precision_rows(device, voice_source, chunks, repeats)
    _report(batching, precision, args.json)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, few chunks, one repeat")
    parser.add_argument("--voice", help="voice name or save_pretrained folder [default: piper:joe, or tiny]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--chunks", type=int, help="chunks per run [12 quick, 48 full]")
    parser.add_argument("--repeats", type=int, help="runs per configuration; the best is kept")
    parser.add_argument("--json", action="store_true", help="print the rows and ratios as JSON")
    return parser.parse_args()


def _voice_source(args: argparse.Namespace) -> str:
    if args.voice:
        return str(args.voice)
    if not args.quick:
        try:
            from worker.voices import load_voice

            load_voice("piper:joe")
            return "piper:joe"
        except Exception as err:  # the bench still runs without the voice extra
            print(f"piper:joe unavailable ({err}); using the tiny random VITS", file=sys.stderr)
    from worker.testing import build_tiny_vits

    return str(build_tiny_vits(Path(tempfile.mkdtemp(prefix="ttsfleet-bench-"))))


def _load(source: str):  # type: ignore[no-untyped-def]
    path = Path(source)
    if path.is_dir():
        from worker.loaded_voice import load_folder_voice

        return load_folder_voice(path)
    from worker.voices import load_voice

    return load_voice(source)


def _chunks(count: int):  # type: ignore[no-untyped-def]
    from worker.engine import ChunkInput

    return [ChunkInput(idx=i, text=SENTENCES[i % len(SENTENCES)], seed=i) for i in range(count)]


def _measure(label: str, voice_source: str, device, policy, chunks, repeats: int,  # type: ignore[no-untyped-def]
             **engine_kw) -> Row:
    from worker.engine import start_engine

    voice = _load(voice_source)
    engine = start_engine(voice, device, policy, deterministic=True, **engine_kw)
    best: Row | None = None
    for _ in range(repeats):
        audio_samples = [0]

        def count(audio, audio_samples=audio_samples) -> None:  # type: ignore[no-untyped-def]
            audio_samples[0] += len(audio.samples)

        started = time.perf_counter()
        run = engine.synthesize(chunks, count)
        row = Row(label, audio_samples[0] / engine.sample_rate_hz, time.perf_counter() - started, run.batches,
                  note=f"{engine.policy.dtype}, max batch {run.max_batch_size}, peak {_mb(run.peak_mem_bytes)}")
        engine.cleanup()
        if best is None or row.synth_s < best.synth_s:
            best = row
    assert best is not None
    if engine.notes:
        best.note += "; " + "; ".join(engine.notes)
    return best


def _batching_rows(device, voice_source: str, chunks, repeats: int) -> list[Row]:  # type: ignore[no-untyped-def]
    from worker.precision import choose_policy

    policy = choose_policy(device)
    one = _measure("one chunk per batch", voice_source, device, policy, chunks, repeats, max_batch_items=1)
    batched = _measure("length-batched", voice_source, device, policy, chunks, repeats)
    return [one, batched]


def _precision_rows(device, voice_source: str, chunks, repeats: int) -> list[Row]:  # type: ignore[no-untyped-def]
    from schemas.errors import PrecisionRefused
    from worker.precision import VITS_FP32_MODULES, Policy, choose_policy

    rows = []
    for name in ("fp32", "fp16", "bf16"):
        try:
            policy = choose_policy(device, name)
        except PrecisionRefused as err:
            rows.append(Row(name, 0.0, 0.0, 0, note=f"refused: {err}"))
            continue
        rows.append(_measure(name, voice_source, device, policy, chunks, repeats))
    if device.backend == "cpu":
        cpu_bf16 = Policy(dtype="bfloat16", tf32=False, mode="autocast", keep_fp32=VITS_FP32_MODULES,
                          reason="bench only", run_on="cpu")
        rows.append(_measure("bf16 CPU autocast (not a policy)", voice_source, device, cpu_bf16, chunks, repeats))
    return rows


def _report(batching: list[Row], precision: list[Row], as_json: bool) -> None:
    fp32 = next(r for r in precision if r.label == "fp32")
    ratios = {"batched_vs_one_by_one": batching[1].speed_x / batching[0].speed_x}
    for row in precision:
        if row.synth_s > 0 and row is not fp32:
            key = "cpu_autocast_bf16" if "autocast" in row.label else row.label
            ratios[f"{key}_vs_fp32"] = row.speed_x / fp32.speed_x
    if as_json:
        json.dump({"rows": [{**r.__dict__, "speed_x": r.speed_x} for r in batching + precision],
                   "ratios": ratios}, sys.stdout, indent=2)
        print()
        return
    print(f"{'configuration':36} {'audio s':>8} {'synth s':>8} {'x real time':>11} {'batches':>7}  notes")
    for row in batching + precision:
        speed = f"{row.speed_x:11.1f}" if row.synth_s > 0 else f"{'-':>11}"
        print(f"{row.label:36} {row.audio_s:8.1f} {row.synth_s:8.2f} {speed} {row.batches:7d}  {row.note}")
    print()
    for key, value in ratios.items():
        print(f"ratio {key}: {value:.2f}")


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


if __name__ == "__main__":
    main()
