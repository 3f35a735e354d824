"""The default voice speaks intelligible English, judged by an independent offline recognizer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worker.asr import MAX_WER, REFERENCE_PARAGRAPH, transcribe, wer

PARAGRAPH = REFERENCE_PARAGRAPH


@pytest.mark.slow
def test_default_voice_is_intelligible(tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch

    from worker.voices import load_voice

    voice = load_voice("piper:joe", cache_dir=tmp_path_factory.getbasetemp() / "voices-cache")
    pause = np.zeros(int(0.3 * voice.sample_rate_hz), dtype=np.float32)
    pieces = []
    for idx, sentence in enumerate(re.findall(r"[^.]+\.", PARAGRAPH)):  # one chunk per sentence, as the engine
        encoded = voice.encode(sentence.strip())
        assert encoded.dropped == ""
        torch.manual_seed(idx)
        with torch.inference_mode():
            out = voice.model(input_ids=torch.tensor([encoded.ids]))
        pieces += [out.waveform[0, : out.sequence_lengths[0]].numpy(), pause]
    audio = np.concatenate(pieces)
    assert 8.0 < audio.size / voice.sample_rate_hz < 25.0
    heard = transcribe(audio, voice.sample_rate_hz)
    assert wer(PARAGRAPH, heard) <= MAX_WER, heard


def test_wer() -> None:
    assert wer("The cat sat.", "the cat sat") == 0.0
    assert wer("the cat sat", "the dog sat down") == pytest.approx(2 / 3)
    assert wer("Don't stop", "don't stop") == 0.0


@pytest.mark.slow
def test_threshold_rejects_noise() -> None:
    """Negative control: the recognizer hallucinates a few words on noise, far above MAX_WER."""
    noise = np.random.default_rng(0).normal(0.0, 0.05, 10 * 22050).astype(np.float32)
    assert wer(PARAGRAPH, transcribe(noise, 22050)) > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_ttsfleet_run_speaks_a_paragraph_intelligibly(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                      runtime: str) -> None:
    """The whole path a user takes: `ttsfleet run` with the default voice, judged from the written file, on
    each runtime (the CPU default, onnxruntime, and torch); the stored metrics say which one ran."""
    import soundfile as sf
    from sqlalchemy import create_engine, text

    (tmp_path / "paragraph.txt").write_text(PARAGRAPH)
    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "TTSFLEET_OUTPUT_DIR": str(tmp_path / "out"), "TTSFLEET_VOICE": "piper:joe",
           "TTSFLEET_VOICES_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "voices-cache"), "HF_HUB_OFFLINE": "1",
           "TTSFLEET_RUNTIME": runtime, "TTSFLEET_DEVICE": "cpu"}
    result = subprocess.run([sys.executable, "-m", "producer.cli", "run", "paragraph.txt", "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    [view] = json.loads(result.stdout)
    audio, rate = sf.read(view["audio_path"], dtype="float32")
    assert rate == 22050 and view["audio_s"] == pytest.approx(len(audio) / rate, abs=1e-6)
    heard = transcribe(audio, rate)
    assert wer(PARAGRAPH, heard) <= MAX_WER, heard
    with create_engine(f"sqlite:///{tmp_path / 'store.db'}").connect() as conn:
        assert conn.execute(text("SELECT runtime FROM job_metrics")).scalar_one() == runtime
