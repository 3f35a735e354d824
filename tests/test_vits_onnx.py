"""Any transformers VITS voice on ONNX Runtime: exported once with Piper's graph interface, checked against
PyTorch with noise off, cached by its weights' hash, and run by the same `OnnxRunner` lanes as Piper voices
(multi-speaker voices keep their speaker input)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from schemas.status import Runtime
from tests.conftest import TEST_VOICE_DIRS
from worker.device import detect_device
from worker.engine import ChunkAudio, ChunkInput, start_engine
from worker.fidelity import compare
from worker.loaded_voice import load_folder_voice
from worker.precision import choose_policy
from worker.testing import build_tiny_vits
from worker.vits_onnx import EXPORT_BAR, exported_path, weights_hash
from worker.voices import exported_voice, load_voice

CPU = detect_device("cpu")
TEXTS = ["the first sentence is here.", "a second one, a little longer than the first was.", "yes."]


def _speak(engine: object, speaker: int | None = None) -> dict[int, np.ndarray]:
    got: dict[int, ChunkAudio] = {}
    engine.synthesize([ChunkInput(i, t, 7, speaker) for i, t in enumerate(TEXTS)],  # type: ignore[attr-defined]
                      lambda audio: got.__setitem__(audio.idx, audio))
    return {idx: got[idx].samples for idx in sorted(got)}


def test_a_tiny_random_vits_export_matches_pytorch_and_runs_on_lanes(tmp_path: Path) -> None:
    folder = build_tiny_vits(Path(TEST_VOICE_DIRS) / f"{tmp_path.name}-export", seed=11)
    voice = load_voice(str(folder), tmp_path / "cache", onnx=True)
    assert voice.model is None and voice.onnx is not None and voice.onnx.checked is not None
    assert EXPORT_BAR.problem(voice.onnx.checked) is None
    assert voice.onnx.path == exported_path(tmp_path / "cache", weights_hash(folder) or "")
    policy = choose_policy(CPU, runtime="onnxruntime")
    engine = start_engine(voice, CPU, policy, deterministic=True, threads=2)
    assert engine.runtime == Runtime.ONNXRUNTIME and engine.runner.lanes == 2
    assert engine.fidelity == voice.onnx.checked  # what the export's check measured is what the engine reports
    on_onnx = _speak(engine)
    torch_engine = start_engine(load_folder_voice(folder), CPU, choose_policy(CPU, runtime="torch"),
                                deterministic=True, max_batch_items=1)
    on_torch = _speak(torch_engine)
    got = compare(list(on_torch.values()), list(on_onnx.values()), voice.sample_rate_hz)
    assert got.duration_error == 0 and got.snr_db >= 40, got


def test_the_export_is_made_once_per_weights(tmp_path: Path) -> None:
    folder = build_tiny_vits(Path(TEST_VOICE_DIRS) / f"{tmp_path.name}-once", seed=12)
    first = load_voice(str(folder), tmp_path / "cache", onnx=True)
    assert first.onnx is not None
    made = first.onnx.path.stat().st_mtime_ns
    again = load_voice(str(folder), tmp_path / "cache", onnx=True)
    assert again.onnx is not None and again.onnx.path == first.onnx.path
    assert again.onnx.path.stat().st_mtime_ns == made and again.onnx.checked == first.onnx.checked
    changed = build_tiny_vits(folder, seed=13)  # other weights in the same folder: exported again
    third = load_voice(str(changed), tmp_path / "cache", onnx=True)
    assert third.onnx is not None and third.onnx.path != first.onnx.path
    assert sorted(p.name for p in (tmp_path / "cache" / "exported").glob("*.onnx")) == sorted(
        {first.onnx.path.name, third.onnx.path.name})


def test_a_multi_speaker_export_keeps_its_speaker_input(tmp_path: Path) -> None:
    folder = build_tiny_vits(Path(TEST_VOICE_DIRS) / f"{tmp_path.name}-speakers", seed=14,
                             speakers=("alice", "bob", "carol"))
    voice = load_voice(str(folder), tmp_path / "cache", onnx=True)
    assert voice.onnx is not None and voice.num_speakers == 3
    engine = start_engine(voice, CPU, choose_policy(CPU, runtime="onnxruntime"), deterministic=True, threads=1)
    assert engine.num_speakers == 3
    torch_engine = start_engine(load_folder_voice(folder), CPU, choose_policy(CPU, runtime="torch"),
                                deterministic=True, max_batch_items=1)
    for speaker in (0, 2):
        on_onnx, on_torch = _speak(engine, speaker), _speak(torch_engine, speaker)
        got = compare(list(on_torch.values()), list(on_onnx.values()), voice.sample_rate_hz)
        assert got.duration_error == 0 and got.snr_db >= 40, (speaker, got)
    assert not np.array_equal(_speak(engine, 0)[0], _speak(engine, 2)[0])


def test_an_export_that_does_not_match_stays_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import worker.vits_onnx

    folder = build_tiny_vits(Path(TEST_VOICE_DIRS) / f"{tmp_path.name}-mismatch", seed=15)
    real_check = worker.vits_onnx.check

    def off_by_noise(*args: object) -> object:  # the graph checked is made to differ from PyTorch
        fidelity = real_check(*args)  # type: ignore[arg-type]
        return type(fidelity)(fidelity.mel_distance_db + 3.0, 12.0, 0.0, fidelity.sentences)

    monkeypatch.setattr(worker.vits_onnx, "check", off_by_noise)
    warned = logging.getLogger("ttsfleet.worker")
    # Directly, enabled and at WARNING: a test run earlier in this process may have stopped this logger
    # propagating, disabled it, or raised its level (the record was lost once in CI that way).
    warned.addHandler(caplog.handler)
    monkeypatch.setattr(warned, "disabled", False)
    caplog.set_level(logging.WARNING, logger="ttsfleet.worker")
    try:
        voice = exported_voice(load_folder_voice(folder), tmp_path / "cache")
    finally:
        warned.removeHandler(caplog.handler)
    assert voice.onnx is None and voice.model is not None
    assert "runs on torch: the ONNX export does not match PyTorch (mel" in caplog.text
    assert not list((tmp_path / "cache" / "exported").glob("*.onnx")), "a failed export must not be kept"
    engine = start_engine(voice, CPU, choose_policy(CPU, runtime="onnxruntime"))
    assert engine.runtime == Runtime.TORCH and "has no ONNX model" in engine.policy.reason


@pytest.mark.slow
def test_an_imported_piper_folder_runs_on_onnxruntime(tmp_path: Path) -> None:
    """The joe voice as a plain folder (`voices import-piper`): exported from the converted weights, its
    audio matches PyTorch's (the bench compares its speed with piper:joe's, docs/benchmarks.md)."""
    from worker.voices import bundled_voice_folder

    cache = Path(os.environ.get("TTSFLEET_VOICES_CACHE_DIR") or tmp_path / "cache")
    folder = bundled_voice_folder("piper:joe", cache)
    voice = load_voice(str(folder), cache, onnx=True)
    assert voice.onnx is not None and voice.onnx.checked is not None
    assert EXPORT_BAR.problem(voice.onnx.checked) is None, voice.onnx.checked
    engine = start_engine(voice, CPU, choose_policy(CPU, runtime="onnxruntime"), deterministic=True)
    audio = _speak(engine)
    assert all(len(wave) > 0.2 * voice.sample_rate_hz for wave in audio.values())
