"""The onnxruntime runtime: chosen on CPUs for voices with an ONNX model, reported, torch-free, and
equivalent to the PyTorch model with noise off (same weights, same phoneme ids)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from schemas.status import Runtime
from worker.device import parse_simulated
from worker.engine import ChunkInput, start_engine
from worker.loaded_voice import LoadedVoice, load_folder_voice
from worker.onnx_runner import OnnxRunner
from worker.precision import choose_policy

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Yes.",
             "In the spring the water rose, and the children came down to watch the ice break up and drift away."]
# Max absolute sample difference, ONNX Runtime vs the converted PyTorch model, noise off: measured 4.8e-5
# on the bundled voice (float32 kernels differ in summation order); speech peaks are ~0.5.
MAX_ABS_DIFF = 1e-3

CPU = parse_simulated("cpu::8")


def _waves(voice: LoadedVoice, runtime: str, threads: int | None = None) -> tuple[list[np.ndarray], str, int]:
    engine = start_engine(voice, CPU, choose_policy(CPU, runtime=runtime), deterministic=True, threads=threads)
    got: dict[int, np.ndarray] = {}
    run = engine.synthesize([ChunkInput(i, t, i) for i, t in enumerate(SENTENCES)],
                            lambda audio: got.__setitem__(audio.idx, audio.samples))
    return [got[i] for i in range(len(SENTENCES))], str(engine.runtime), run.max_batch_size


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_with_noise_off(tmp_path: Path) -> None:
    from worker.voices import load_voice

    onnx_waves, onnx_runtime, onnx_batch = _waves(load_voice("piper:joe", tmp_path, onnx=True), "onnxruntime",
                                                  threads=2)
    torch_waves, torch_runtime, _ = _waves(load_voice("piper:joe", tmp_path), "torch")
    # Two threads: two lanes, the sentences synthesized two at a time, each alone in its graph call.
    assert (onnx_runtime, torch_runtime, onnx_batch) == ("onnxruntime", "torch", 2)
    for onnx_wave, torch_wave in zip(onnx_waves, torch_waves, strict=True):
        assert onnx_wave.dtype == np.float32 and len(onnx_wave) == len(torch_wave) > 10_000
        assert float(np.abs(onnx_wave - torch_wave).max()) < MAX_ABS_DIFF
        assert float(np.abs(torch_wave).max()) > 0.1  # not two silences agreeing


@pytest.mark.slow
def test_lanes_side_by_side_give_the_audio_of_one_item_at_a_time(tmp_path: Path) -> None:
    from worker.voices import load_voice

    voice = load_voice("piper:joe", tmp_path, onnx=True)
    assert voice.onnx is not None
    ids = [list(voice.encode(text).ids) for text in SENTENCES]
    policy = choose_policy(CPU, runtime="onnxruntime")
    lanes = OnnxRunner(voice.onnx, CPU, policy, noise_off=True, threads=2)
    alone = OnnxRunner(voice.onnx, CPU, policy, noise_off=True, threads=1)
    assert (lanes.lanes, alone.lanes) == (2, 1)
    side_by_side, one_by_one = lanes.run(ids), alone.run(ids)
    for wave, reference in zip(side_by_side, one_by_one, strict=True):  # in the order given
        assert len(wave) == len(reference) > 10_000
        assert float(np.abs(wave - reference).max()) < 1e-4


@pytest.mark.slow
def test_onnxruntime_noise_on_is_speech_and_varies(tmp_path: Path) -> None:
    from worker.voices import load_voice

    voice = load_voice("piper:joe", tmp_path, onnx=True)
    engine = start_engine(voice, CPU, choose_policy(CPU))
    assert engine.runtime == Runtime.ONNXRUNTIME and engine.canary_s > 0
    ids = voice.encode(SENTENCES[0]).ids
    first, _ = engine.forward([ids], None)
    second, _ = engine.forward([ids], None)
    assert first is not None and second is not None
    assert not np.array_equal(first[0], second[0])  # noise is on (durations or samples differ)


def test_a_voice_without_onnx_runs_on_torch_under_an_onnxruntime_policy(tiny_vits_dir: Path) -> None:
    voice = load_folder_voice(tiny_vits_dir, name="tiny")
    policy = choose_policy(CPU, runtime="onnxruntime")
    engine = start_engine(voice, CPU, policy, deterministic=True)
    assert engine.runtime == Runtime.TORCH and engine.policy.runtime == Runtime.TORCH
    assert "voice tiny has no ONNX model" in engine.policy.reason and engine.notes == []


_NO_TORCH_START = """
import json, sys
from schemas.settings import WorkerSettings
from worker.runtime import WorkerRuntime
settings = WorkerSettings.from_env({}, database_url=sys.argv[1], output_dir=sys.argv[2], device="cpu",
                                   voices_cache_dir=sys.argv[2], threads=1)
runtime = WorkerRuntime.start(settings)
row = runtime.registry_row()
import gc
print(json.dumps({"details": row["details"], "torch": "torch" in sys.modules, "frozen": gc.get_freeze_count(),
                  "transformers": "transformers" in sys.modules, "reason": row["policy_reason"]}))
"""


@pytest.mark.slow
def test_a_cpu_worker_starts_on_onnxruntime_without_importing_torch(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _NO_TORCH_START, f"sqlite:///{tmp_path / 's.db'}", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["details"]["runtime"] == "onnxruntime" and report["details"]["threads"] == 1
    assert (report["torch"], report["transformers"]) == (False, False)
    assert "onnxruntime" in report["reason"]
    assert report["frozen"] > 10_000  # start-up objects are out of the per-job collection's way


@pytest.mark.slow
def test_the_optimized_graph_is_cached_and_gives_the_same_audio(tmp_path: Path) -> None:
    from worker.onnx_runner import OnnxRunner
    from worker.voices import load_voice

    voice = load_voice("piper:joe", tmp_path, onnx=True)
    assert voice.onnx is not None and voice.onnx.cache_dir == tmp_path / "onnxruntime"
    policy = choose_policy(CPU)
    ids = [voice.encode(SENTENCES[0]).ids]
    first = OnnxRunner(voice.onnx, CPU, policy, noise_off=True).run(ids)
    cached = list((tmp_path / "onnxruntime").glob("*.onnx"))
    assert len(cached) == 1 and not list((tmp_path / "onnxruntime").glob(".*.tmp"))
    second = OnnxRunner(voice.onnx, CPU, policy, noise_off=True).run(ids)  # loads the cached graph
    assert float(np.abs(first[0] - second[0]).max()) < MAX_ABS_DIFF and len(first[0]) == len(second[0])
