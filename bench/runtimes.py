"""A folder voice on ONNX Runtime against the bundled Piper voice, side by side in one run (CPU).

    python -m bench.runtimes [--repeats N] [--json]

The joe voice is imported as a plain transformers folder with the real command (`ttsfleet voices
import-piper ONNX CONFIG DIR`), then synthesized from that folder — exported to ONNX at its first load
(worker.vits_onnx) and run on the same lanes — and as `piper:joe` (Piper's own ONNX graph), on the same
chunks, noise off, in paired rounds (medians). Also the folder on eager PyTorch, as it ran before.
Prints x real time per row and the folder's speed over piper:joe's (the target is >= 0.9), then, for the
whole path, `ttsfleet run` of the same text with each voice (wall seconds, caches warm).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engine import SENTENCES

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds, each running every voice once [5]")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ttsfleet-bench-runtimes-"))
    cache = Path(os.environ.get("TTSFLEET_VOICES_CACHE_DIR") or work / "voices-cache")
    folder = import_joe(work / "joe-folder", cache)
    engines = start_engines(folder, cache)
    speeds, ratios = race(engines, args.repeats)
    runs = {name: run_wall_s(voice, work, cache) for name, voice in (("piper:joe", "piper:joe"),
                                                                      ("folder", str(folder)))}
    result = {"x_real_time": speeds, "folder_vs_piper_joe": ratios["folder (onnxruntime)"],
              "torch_folder_vs_piper_joe": ratios["folder (torch)"],
              "run_wall_s": runs, "run_piper_joe_vs_folder": runs["piper:joe"] / runs["folder"]}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'voice':24} {'x real time':>11}")
    for name, speed in speeds.items():
        print(f"{name:24} {speed:11.1f}")
    print(f"ratio folder (onnxruntime) / piper:joe, median of {args.repeats} paired rounds: "
          f"{result['folder_vs_piper_joe']:.2f} (target >= 0.9)")
    print(f"ratio folder (torch) / piper:joe, median of {args.repeats} paired rounds: "
          f"{result['torch_folder_vs_piper_joe']:.2f}")
    print(f"ttsfleet run wall s: piper:joe {runs['piper:joe']:.1f}, folder {runs['folder']:.1f}; "
          f"speed ratio folder / piper:joe {result['run_piper_joe_vs_folder']:.2f}")


def import_joe(folder: Path, cache: Path) -> Path:
    """`ttsfleet voices import-piper` of the bundled joe files into `folder`."""
    from schemas.voices import BUNDLED_PIPER
    from worker.voices import verify_bundled

    onnx_path, config_path = verify_bundled(BUNDLED_PIPER["joe"])
    command = [sys.executable, "-m", "producer.cli", "voices", "import-piper", str(onnx_path), str(config_path),
               str(folder)]
    env = {**os.environ, "TTSFLEET_VOICES_CACHE_DIR": str(cache)}
    subprocess.run(command, check=True, capture_output=True, env=env)
    return folder


def start_engines(folder: Path, cache: Path) -> dict[str, Any]:
    """piper:joe and the folder on onnxruntime, the folder on torch; noise off, default threads and lanes."""
    from worker.device import detect_device
    from worker.engine import start_engine
    from worker.precision import choose_policy
    from worker.voices import load_voice

    cpu = detect_device("cpu")
    onnx, torch = choose_policy(cpu, runtime="onnxruntime"), choose_policy(cpu, runtime="torch")
    started = time.perf_counter()
    exported = load_voice(str(folder), cache, onnx=True)
    print(f"folder voice loaded for onnxruntime in {time.perf_counter() - started:.1f} s "
          f"(export and check on the first load only)", file=sys.stderr)
    return {"piper:joe": start_engine(load_voice("piper:joe", cache, onnx=True), cpu, onnx, deterministic=True),
            "folder (onnxruntime)": start_engine(exported, cpu, onnx, deterministic=True),
            "folder (torch)": start_engine(load_voice(str(folder), cache), cpu, torch, deterministic=True)}


def race(engines: dict[str, Any], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each engine's median x real time over `repeats` rounds, and each engine's median per-round speed
    over piper:joe's. In a round every engine runs once, in an order reversed every other round, so a
    machine whose load swings (a shared one) slows the engines of a round alike: the per-round ratio is
    steadier than either speed. One untimed warm-up round first."""
    from worker.engine import ChunkInput

    chunks = [ChunkInput(idx=i, text=text, seed=i) for i, text in enumerate(SENTENCES * 2)]
    speeds: dict[str, list[float]] = {name: [] for name in engines}
    ratios: dict[str, list[float]] = {name: [] for name in engines if name != "piper:joe"}
    for round_ in range(repeats + 1):
        order = list(engines.items()) if round_ % 2 else list(engines.items())[::-1]
        this: dict[str, float] = {}
        for name, engine in order:
            lengths: list[int] = []
            started = time.perf_counter()
            engine.synthesize(chunks, lambda audio, lengths=lengths: lengths.append(len(audio.samples)))
            this[name] = sum(lengths) / engine.sample_rate_hz / (time.perf_counter() - started)
            engine.cleanup()
        if round_:  # round 0 warms up
            for name, speed in this.items():
                speeds[name].append(speed)
                if name in ratios:
                    ratios[name].append(speed / this["piper:joe"])
    return ({name: statistics.median(values) for name, values in speeds.items()},
            {name: statistics.median(values) for name, values in ratios.items()})


def run_wall_s(voice: str, work: Path, cache: Path) -> float:
    """Wall seconds of `ttsfleet run` of the bench text with `voice` (embedded, SQLite), caches warm."""
    text = work / "text.txt"
    text.write_text(" ".join(SENTENCES * 2), encoding="utf-8")
    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{work / 'store.db'}", "TTSFLEET_VOICE": voice,
           "TTSFLEET_OUTPUT_DIR": str(work / "out"), "TTSFLEET_VOICES_CACHE_DIR": str(cache),
           "TTSFLEET_VOICE_DIRS": str(work), "TTSFLEET_DEVICE": "cpu"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "producer.cli", "run", str(text), "--json"], check=True, env=env,
                   capture_output=True, cwd=work)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
