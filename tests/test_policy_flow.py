"""The precision policy is decided once per voice: `start_engine` returns the policy that really runs (on the
engine), and a worker starts every later voice under the policy it was asked for, not under whatever the
first voice fell back to. The engine and both runners satisfy the protocols the rest of the worker uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.settings import WorkerSettings
from schemas.status import Runtime
from tests.conftest import TEST_VOICE_DIRS
from tests.test_engine import CPU_BF16
from worker.device import detect_device
from worker.engine import Engine, start_engine
from worker.loaded_voice import LoadedVoice, load_folder_voice
from worker.model import ModelRunner
from worker.precision import choose_policy
from worker.testing import build_tiny_vits


def _nan_under_autocast(voice: LoadedVoice) -> LoadedVoice:
    """`voice` whose waveform is NaN whenever autocast is on (what fp16 does on a GTX 16xx)."""
    import torch

    original = voice.model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if torch.is_autocast_enabled("cpu"):
            out.waveform[:] = float("nan")
        return out

    voice.model.forward = forward
    return voice


def test_a_fallback_of_the_first_voice_is_not_the_policy_of_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_vits_dir: Path) -> None:
    import worker.precision
    import worker.voices
    from worker.runtime import WorkerRuntime

    other = build_tiny_vits(Path(TEST_VOICE_DIRS) / f"{tmp_path.name}-other", seed=3)
    real_load = worker.voices.load_voice

    def load_voice(name: str, *args: Any, **kwargs: Any) -> LoadedVoice:
        voice = real_load(name, *args, **kwargs)
        return _nan_under_autocast(voice) if name == str(tiny_vits_dir) else voice

    monkeypatch.setattr(worker.voices, "load_voice", load_voice)
    # bf16 under CPU autocast stands in for a card's low precision (a CPU itself is refused bf16).
    monkeypatch.setattr(worker.precision, "choose_policy", lambda *_args, **_kw: CPU_BF16)
    settings = WorkerSettings(database_url=f"sqlite:///{tmp_path / 'store.db'}", voice=str(tiny_vits_dir),
                              voice_dirs=TEST_VOICE_DIRS, device="cpu", voices_cache_dir=tmp_path / "cache")
    runtime = WorkerRuntime.start(settings)
    first = runtime.engine_for(str(tiny_vits_dir))
    assert first.policy.dtype == "float32" and "NaN/inf" in first.notes[0]
    assert runtime.policy == first.policy  # what the default voice runs: the registry's row
    assert runtime.requested == CPU_BF16
    second = runtime.engine_for(str(other))
    assert second.policy.dtype == "bfloat16", "the next voice inherited the first voice's fallback"
    assert second.notes == [] or all("NaN" not in note for note in second.notes)
    runtime.stop()


def test_the_engine_says_what_runs_and_how_many_speakers(tiny_vits_dir: Path) -> None:
    cpu = detect_device("cpu")
    engine = start_engine(load_folder_voice(tiny_vits_dir), cpu, choose_policy(cpu, runtime="onnxruntime"))
    # Asked for onnxruntime; a torch-only voice runs on torch, and the engine's policy says so.
    assert isinstance(engine.runner, ModelRunner) and engine.runtime == Runtime.TORCH
    assert engine.policy.runtime == Runtime.TORCH and engine.num_speakers == 1
    two = build_tiny_vits(Path(TEST_VOICE_DIRS) / "policy-flow-two-speakers", seed=2, speakers=("a", "b"))
    assert start_engine(load_folder_voice(two), cpu, choose_policy(cpu)).num_speakers == 2


def test_torch_runner_streams_items_one_by_one_with_errors_in_place(tiny_vits_dir: Path) -> None:
    from worker.runner import LaneItem

    cpu = detect_device("cpu")
    engine: Engine = start_engine(load_folder_voice(tiny_vits_dir), cpu, choose_policy(cpu), deterministic=True)
    runner = engine.runner
    assert (runner.lanes, runner.padded_batches) == (1, True)
    ids = engine.voice.encode("a short one.").ids
    got = list(runner.stream([LaneItem(ids), LaneItem([10**9]), LaneItem(ids, speed=2.0)]))
    assert [pos for pos, _, _ in got] == [0, 1, 2]
    assert isinstance(got[1][1], Exception)  # an id outside the vocabulary: that item's error, not the call's
    np.testing.assert_array_equal(got[0][1], runner.run([ids])[0])  # type: ignore[arg-type]
    np.testing.assert_array_equal(got[2][1], runner.run([ids], speed=2.0)[0])  # type: ignore[arg-type]
