"""Assembly of chunk audio into a job's file, its subtitles and manifest, and a book's .m4b."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from schemas.status import AudioFormat, BreakKind
from tests.fakes import tone
from worker.audio import PAUSE_S, AssemblyPiece, assemble, write_chunk
from worker.book_audio import build_book

RATE = 16_000


def _pieces(tmp_path: Path, breaks: list[BreakKind]) -> list[AssemblyPiece]:
    pieces = []
    for i, brk in enumerate(breaks):
        path = tmp_path / "chunks" / f"{i:06d}.wav"
        write_chunk(path, tone(10 + 5 * i), RATE)
        pieces.append(AssemblyPiece(path, f"Chunk number {i}.", brk))
    return pieces


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_assembled_file_has_chunks_and_pauses_and_true_duration(tmp_path: Path, fmt: AudioFormat) -> None:
    breaks = [BreakKind.SENTENCE, BreakKind.PARAGRAPH, BreakKind.NONE, BreakKind.CHAPTER]
    pieces = _pieces(tmp_path, breaks)
    out = assemble(pieces, RATE, fmt, tmp_path / f"job.{fmt.value}", title="T")
    info = sf.info(str(out.path))
    assert info.samplerate == RATE and info.channels == 1
    assert out.audio_s == pytest.approx(info.frames / info.samplerate, abs=1e-9)
    speech = sum(len(tone(10 + 5 * i)) for i in range(4))
    pauses = sum(round(PAUSE_S[b] * RATE) for b in breaks[:-1])  # nothing after the last chunk
    if fmt != AudioFormat.OGG:  # Vorbis may pad the last page
        assert info.frames == speech + pauses
    wav, _ = sf.read(str(out.path), dtype="float32")
    assert float(np.sqrt(np.mean(wav**2))) > 0.05


def test_subtitles_are_monotonic_and_end_at_the_audio_length(tmp_path: Path) -> None:
    out = assemble(_pieces(tmp_path, [BreakKind.SENTENCE] * 5), RATE, AudioFormat.WAV, tmp_path / "job.wav")
    cues = json.loads(out.manifest_path.read_text())["chunks"]
    starts, ends = [c["start_s"] for c in cues], [c["end_s"] for c in cues]
    assert all(s < e for s, e in zip(starts, ends, strict=True))
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))
    assert ends[-1] == pytest.approx(out.audio_s)
    srt = out.srt_path.read_text()
    assert srt.count(" --> ") == 5 and "Chunk number 4." in srt
    last_end = srt.strip().splitlines()[-2].split(" --> ")[1]
    h, m, rest = last_end.split(":")
    assert int(h) * 3600 + int(m) * 60 + float(rest.replace(",", ".")) == pytest.approx(out.audio_s, abs=1e-3)
    assert out.vtt_path.read_text().startswith("WEBVTT")


def test_loudness_normalization_reaches_the_target(tmp_path: Path) -> None:
    import pyloudnorm

    out = assemble(_pieces(tmp_path, [BreakKind.SENTENCE] * 3), RATE, AudioFormat.FLAC, tmp_path / "job.flac",
                   loudness_lufs=-20.0)
    wav, rate = sf.read(str(out.path), dtype="float64")
    assert pyloudnorm.Meter(rate).integrated_loudness(wav) == pytest.approx(-20.0, abs=1.0)


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    missing = AssemblyPiece(tmp_path / "nope.wav", "gone", BreakKind.SENTENCE)
    with pytest.raises(sf.LibsndfileError):
        assemble([*_pieces(tmp_path, [BreakKind.SENTENCE]), missing], RATE, AudioFormat.WAV, tmp_path / "job.wav")
    assert not (tmp_path / "job.wav").exists()
    assert not list(tmp_path.glob(".job.wav*"))


def test_book_has_one_chapter_mark_per_file_matching_its_duration(tmp_path: Path) -> None:
    chapters = []
    for i in range(3):
        path = tmp_path / f"{i:02d}.wav"
        sf.write(str(path), tone(20 + 10 * i), RATE)
        chapters.append((f"Chapter {i + 1}", path))
    assert shutil.which("ffmpeg"), "ffmpeg is required for this test; `make test` installs it"
    book = build_book(chapters, "A Small Book", tmp_path / "book.m4b")
    assert book is not None and book.is_file()
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_chapters", "-show_format", str(book)],
        capture_output=True, text=True, check=True).stdout)
    marks = probe["chapters"]
    assert [m["tags"]["title"] for m in marks] == ["Chapter 1", "Chapter 2", "Chapter 3"]
    for mark, (_, path) in zip(marks, chapters, strict=True):
        duration = sf.info(str(path)).duration
        assert float(mark["end_time"]) - float(mark["start_time"]) == pytest.approx(duration, abs=0.01)
    assert probe["format"]["tags"]["title"] == "A Small Book"


def test_without_ffmpeg_no_book_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    path = tmp_path / "c.wav"
    sf.write(str(path), tone(10), RATE)
    assert build_book([("One", path)], "Book", tmp_path / "book.m4b") is None
    assert not (tmp_path / "book.m4b").exists()
