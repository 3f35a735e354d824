"""The speed benchmark's contenders that run in this process or as one command: Piper's own engine
(in-process and `python -m piper`), the naive transformers loop, ttsfleet's engine, `ttsfleet run`.

Every function returns a `Timing`: seconds of audio made and seconds of wall time it took, so any two
are compared as throughputs (audio seconds per wall second, "x real time").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.inputs import chapter_text, notice_texts, sentences

__all__ = ["Timing", "chapter_text", "engine_alone", "naive_loop", "notice_texts", "piper_and_engine_paired",
           "piper_cli", "piper_in_process", "sentences", "start_bench_engine", "ttsfleet_run"]


@dataclass(frozen=True, slots=True)
class Timing:
    """`audio_s` seconds of audio made in `wall_s` seconds of wall time (`items`: sentences or jobs)."""

    audio_s: float
    wall_s: float
    items: int = 0

    @property
    def speed_x(self) -> float:
        """Audio seconds per wall second ("x real time")."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("nan")


def piper_files() -> tuple[Path, Path]:
    """The bundled voice's ONNX and config files (sha256 checked), as Piper itself uses them."""
    from schemas.voices import BUNDLED_PIPER
    from worker.voices import verify_bundled

    return verify_bundled(BUNDLED_PIPER["joe"])


def piper_in_process(texts: list[str]) -> Timing:
    """Piper's `PiperVoice` (ONNX Runtime, its default session), each text synthesized sentence by
    sentence as Piper does; the voice loaded before the clock starts."""
    from piper import PiperVoice

    onnx_path, config_path = piper_files()
    voice = PiperVoice.load(str(onnx_path), str(config_path))
    started, samples = time.perf_counter(), 0
    for text in texts:
        for chunk in voice.synthesize(text):
            samples += len(chunk.audio_float_array)
    return Timing(samples / voice.config.sample_rate, time.perf_counter() - started, len(texts))


def piper_cli(texts: list[str], workdir: Path) -> Timing:
    """`python -m piper` as a whole process per text (text on stdin, a WAV file out), as people script it."""
    onnx_path, config_path = piper_files()
    audio_s, started = 0.0, time.perf_counter()
    for n, text in enumerate(texts):
        out = workdir / f"piper-{n}.wav"
        subprocess.run([sys.executable, "-m", "piper", "-m", str(onnx_path), "-c", str(config_path), "-f", str(out)],
                       input=text, text=True, check=True, capture_output=True, timeout=600)
        audio_s += _wav_seconds(out)
    return Timing(audio_s, time.perf_counter() - started, len(texts))


def naive_loop(texts: list[str], device: str) -> Timing:
    """What a transformers user writes: the converted `VitsModel`, called sentence by sentence under
    `torch.no_grad()` with default settings (no batching, no precision policy, default threads)."""
    import torch

    from worker.voices import load_voice

    voice = load_voice("piper:joe")
    model = voice.model.to(device)
    ids = [voice.encode(text).ids for text in texts]
    started, samples = time.perf_counter(), 0
    with torch.no_grad():
        for item in ids:
            out = model(input_ids=torch.tensor([item], device=device))
            samples += int(out.sequence_lengths[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return Timing(samples / voice.sample_rate_hz, time.perf_counter() - started, len(texts))


def start_bench_engine(device_spec: str, runtime: str = "auto") -> Any:
    """ttsfleet's engine as a worker starts it: the device's policy, its runtime, the voice, the canary."""
    from worker.engine import start_engine
    from worker.precision import resolve
    from worker.voices import load_voice

    device, policy = resolve(device_spec, "auto", runtime=runtime)
    voice = load_voice("piper:joe", onnx=policy.runtime == "onnxruntime")
    return start_engine(voice, device, policy)


def piper_and_engine_paired(engine: Any, texts: list[str], block: int = 8) -> tuple[Timing, Timing]:
    """Piper in-process and the engine on the same texts, alternating block by block (`block` texts each),
    so both see the same load on a shared machine: (piper, engine). Piper speaks a block's texts one after
    another, as it speaks a text sentence by sentence; the engine gets each block as one job's chunks, as a
    worker gets a chapter (the per-call bookkeeping is counted against the engine)."""
    from piper import PiperVoice

    from worker.engine import ChunkInput

    onnx_path, config_path = piper_files()
    voice = PiperVoice.load(str(onnx_path), str(config_path))
    piper_samples, piper_s, engine_samples, engine_s = 0, 0.0, [0], 0.0

    def count(audio: Any) -> None:
        engine_samples[0] += len(audio.samples)

    for first in range(0, len(texts), block):
        part = texts[first:first + block]
        started = time.perf_counter()
        piper_samples += sum(len(chunk.audio_float_array) for text in part for chunk in voice.synthesize(text))
        middle = time.perf_counter()
        engine.synthesize([ChunkInput(first + n, text, first + n) for n, text in enumerate(part)], count)
        engine_s += time.perf_counter() - middle
        piper_s += middle - started
    engine.cleanup()
    return (Timing(piper_samples / voice.config.sample_rate, piper_s, len(texts)),
            Timing(engine_samples[0] / engine.sample_rate_hz, engine_s, len(texts)))


def engine_alone(engine: Any, texts: list[str]) -> Timing:
    """`engine.synthesize` on the texts as one job's chunks (noise on, as a worker runs it)."""
    from worker.engine import ChunkInput

    samples = [0]

    def count(audio: Any) -> None:
        samples[0] += len(audio.samples)

    started = time.perf_counter()
    engine.synthesize([ChunkInput(i, text, i) for i, text in enumerate(texts)], count)
    wall = time.perf_counter() - started
    engine.cleanup()
    return Timing(samples[0] / engine.sample_rate_hz, wall, len(texts))


def ttsfleet_run(text: str, workdir: Path, device: str, env: dict[str, str]) -> Timing:
    """`python -m producer.cli run FILE --json` as a whole process on a fresh store; audio from its output."""
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    (folder / "input.txt").write_text(text, encoding="utf-8")
    run_env = {**env, "TTSFLEET_DATABASE_URL": f"sqlite:///{folder / 'store.db'}",
               "TTSFLEET_OUTPUT_DIR": str(folder / "out"), "TTSFLEET_DEVICE": device}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "producer.cli", "run", "input.txt", "--json"], cwd=folder,
                          env=run_env, capture_output=True, text=True, timeout=900, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ttsfleet run failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return Timing(sum(view["audio_s"] for view in json.loads(done.stdout)), wall, 1)


def bench_env() -> dict[str, str]:
    """The environment every subprocess gets: this checkout first on the path, offline hub."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), "HF_HUB_OFFLINE": "1"}


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()
