"""Chunk files, assembly with pauses, loudness, manifest and subtitles, and .m4b books (real ffmpeg)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from schemas.errors import PermanentError
from schemas.status import AudioFormat, BreakKind
from worker import audio as audio_module
from worker.audio import PAUSE_S, AssemblyPiece, assemble, read_chunk, write_chunk
from worker.book_audio import build_book, chapter_metadata, ffmpeg_available

RATE = 16_000


def _tone(seconds: float, freq_hz: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE), dtype=np.float32) / RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _pieces(tmp_path: Path, spec: list[tuple[float, BreakKind]]) -> list[AssemblyPiece]:
    pieces = []
    for index, (seconds, kind) in enumerate(spec):
        path = tmp_path / "chunks" / f"{index:05d}.wav"
        write_chunk(path, _tone(seconds, 200.0 + 50 * index), RATE)
        pieces.append(AssemblyPiece(path, f" Sentence number {index}. ", kind))
    return pieces


SPEC = [(0.5, BreakKind.NONE), (0.7, BreakKind.SENTENCE), (0.4, BreakKind.PARAGRAPH), (0.6, BreakKind.CHAPTER),
        (0.3, BreakKind.SENTENCE)]


def _cue_times(text: str) -> list[tuple[float, float]]:
    def seconds(stamp: str) -> float:
        h, m, s = stamp.replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    found = re.findall(r"(\d\d:\d\d:\d\d[.,]\d{3}) --> (\d\d:\d\d:\d\d[.,]\d{3})", text)
    return [(seconds(a), seconds(b)) for a, b in found]


def test_chunks_round_trip_as_16_bit_pcm_and_atomically(tmp_path: Path) -> None:
    samples = np.random.default_rng(1).uniform(-1, 1, 3001).astype(np.float32)
    path = tmp_path / "c" / "00001.wav"
    write_chunk(path, samples, RATE)
    stored = read_chunk(path)
    assert np.abs(stored - samples).max() <= 1 / 32767  # 16-bit PCM: the job's own file is 16-bit too
    assert (info := sf.info(str(path))).samplerate == RATE and info.subtype == "PCM_16"
    assert [p.name for p in path.parent.iterdir()] == ["00001.wav"]
    with pytest.raises(ValueError, match="NaN"):
        write_chunk(path, np.array([0.0, np.nan], dtype=np.float32), RATE)
    assert np.array_equal(read_chunk(path), stored)  # the good file survived the refused write


def test_a_batch_of_chunks_shares_one_file_and_each_is_read_back_by_its_range(tmp_path: Path) -> None:
    from worker.audio import write_chunks

    rng = np.random.default_rng(2)
    chunks = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (1000, 1, 4321)]
    path = tmp_path / "c" / "000000-a1.wav"
    offsets = write_chunks(path, chunks, RATE)
    assert offsets == [0, 1000, 1001] and sf.info(str(path)).frames == 5322
    for chunk, offset in zip(chunks, offsets, strict=True):
        assert np.abs(read_chunk(path, offset, len(chunk), RATE) - chunk).max() <= 1 / 32767
    with pytest.raises(PermanentError, match="22050 Hz"):
        read_chunk(path, 0, 10, 22_050)
    float_file = tmp_path / "c" / "old.wav"  # a chunk stored by an earlier version: float WAV
    sf.write(float_file, chunks[0], RATE, subtype="FLOAT")
    assert np.array_equal(read_chunk(float_file, 10, 5), chunks[0][10:15])


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_assembly_pauses_manifest_and_subtitles(tmp_path: Path, fmt: AudioFormat) -> None:
    pieces = _pieces(tmp_path, SPEC)
    out = tmp_path / "out" / f"job.{fmt.value}"
    result = assemble(pieces, RATE, fmt, out, title="A Test")
    info = sf.info(str(out))
    assert (info.samplerate, info.channels) == (RATE, 1)
    assert result.audio_s == info.frames / info.samplerate
    expected_frames = sum(int(s * RATE) for s, _ in SPEC) + sum(round(PAUSE_S[k] * RATE) for _, k in SPEC[:-1])
    assert info.frames == expected_frames
    manifest = json.loads(result.manifest_path.read_text(encoding="utf-8"))
    chunks = manifest["chunks"]
    assert [c["text"] for c in chunks] == [f"Sentence number {i}." for i in range(len(SPEC))]
    assert chunks[-1]["end_s"] == result.audio_s == manifest["audio_s"]
    for chunk, (seconds, kind), nxt in zip(chunks, SPEC, [*chunks[1:], None], strict=True):
        assert chunk["end_s"] - chunk["start_s"] == pytest.approx(seconds, abs=1 / RATE)
        if nxt is not None:
            assert nxt["start_s"] - chunk["end_s"] == pytest.approx(PAUSE_S[kind], abs=1 / RATE)
    if fmt != AudioFormat.OGG:  # lossless: the pauses are exact digital silence
        audio, _ = sf.read(str(out), dtype="float32")
        for chunk, nxt in itertools.pairwise(chunks):
            gap = audio[round(chunk["end_s"] * RATE): round(nxt["start_s"] * RATE)]
            assert len(gap) > 0 and not gap.any()
        assert np.abs(audio).max() > 0.25  # the speech itself is there
    for path in (result.srt_path, result.vtt_path):
        times = _cue_times(path.read_text(encoding="utf-8"))
        assert len(times) == len(SPEC)
        flat = [t for pair in times for t in pair]
        assert flat == sorted(flat) and all(a < b for a, b in times)
        assert flat[-1] == pytest.approx(result.audio_s, abs=0.001)
    assert result.vtt_path.read_text(encoding="utf-8").startswith("WEBVTT\n\n")
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["job.manifest.json", "job.srt", "job.vtt", f"job.{fmt.value}"])


def test_loudness_normalization_reaches_the_target(tmp_path: Path) -> None:
    pieces = _pieces(tmp_path, [(1.5, BreakKind.SENTENCE), (1.5, BreakKind.SENTENCE)])
    result = assemble(pieces, RATE, AudioFormat.WAV, tmp_path / "loud.wav", loudness_lufs=-23.0)
    audio, rate = sf.read(str(result.path), dtype="float64")
    assert pyloudnorm.Meter(rate).integrated_loudness(audio) == pytest.approx(-23.0, abs=0.5)


def test_a_result_written_from_memory_equals_one_written_as_it_goes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A short job's WAV is assembled in memory and written once, a long job's streamed: the same bytes."""
    pieces = [*_pieces(tmp_path, SPEC), AssemblyPiece(_tone(0.4, 330.0), " In memory. ", BreakKind.NONE)]
    in_memory = assemble(pieces, RATE, AudioFormat.WAV, tmp_path / "memory" / "job.wav")
    monkeypatch.setattr(audio_module, "MEMORY_WAV_PIECES", 0)
    streamed = assemble(pieces, RATE, AudioFormat.WAV, tmp_path / "streamed" / "job.wav")
    assert in_memory.path.read_bytes() == streamed.path.read_bytes()
    samples, rate = sf.read(str(in_memory.path), dtype="int16")
    assert rate == RATE and len(samples) == round(in_memory.audio_s * RATE) and np.abs(samples).max() > 1000


def test_a_failed_assembly_leaves_no_file(tmp_path: Path) -> None:
    pieces = _pieces(tmp_path, [(0.3, BreakKind.SENTENCE), (0.3, BreakKind.SENTENCE)])
    assert isinstance(pieces[1].audio, Path)
    pieces[1].audio.unlink()
    out = tmp_path / "out" / "job.flac"
    with pytest.raises(sf.LibsndfileError):
        assemble(pieces, RATE, AudioFormat.FLAC, out)
    assert list(out.parent.iterdir()) == []
    with pytest.raises(PermanentError, match="16000 Hz"):
        write_chunk(pieces[1].audio, _tone(0.2), 22_050)
        assemble(pieces, RATE, AudioFormat.FLAC, out)
    assert list(out.parent.iterdir()) == []


def _ffprobe(path: Path) -> dict[str, object]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_chapters", "-show_format", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def test_book_chapter_marks_match_chapter_files(tmp_path: Path) -> None:
    assert ffmpeg_available(), "ffmpeg is required for this test (apt-get install ffmpeg; make test installs it)"
    chapters = []
    for number, seconds in enumerate([1.3, 0.9, 2.1], 1):
        pieces = _pieces(tmp_path / f"c{number}", [(seconds / 2, BreakKind.SENTENCE), (seconds / 2, BreakKind.CHAPTER)])
        result = assemble(pieces, RATE, AudioFormat.FLAC, tmp_path / f"{number:02d}.flac")
        chapters.append((f"Chapter {number}: = ; # title", result.path))
    book = build_book(chapters, "The Book; Vol. 1", tmp_path / "book" / "the-book.m4b")
    assert book == tmp_path / "book" / "the-book.m4b"
    probe = _ffprobe(book)
    marks = probe["chapters"]
    assert isinstance(marks, list) and len(marks) == 3
    expected_s = [sf.info(str(p)).frames / RATE for _, p in chapters]
    elapsed = 0.0
    for mark, (title, _), seconds in zip(marks, chapters, expected_s, strict=True):
        assert mark["tags"]["title"] == title
        assert float(mark["start_time"]) == pytest.approx(elapsed, abs=0.002)
        assert float(mark["end_time"]) - float(mark["start_time"]) == pytest.approx(seconds, abs=0.002)
        elapsed += seconds
    fmt = probe["format"]
    assert isinstance(fmt, dict)
    assert fmt["tags"]["title"] == "The Book; Vol. 1"
    assert float(fmt["duration"]) == pytest.approx(sum(expected_s), abs=0.1)
    assert [p.name for p in book.parent.iterdir()] == ["the-book.m4b"]


def test_book_without_ffmpeg_returns_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "one.wav"
    write_chunk(path, _tone(0.5), RATE)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert not ffmpeg_available()
    assert build_book([("One", path)], "Book", tmp_path / "book.m4b") is None
    assert not (tmp_path / "book.m4b").exists()
    assert "START=0\nEND=500\ntitle=One" in chapter_metadata([("One", path)], "Book")
