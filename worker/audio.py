"""Audio on disk: chunk files as they are made, the job's stitched file, its manifest and subtitles,
and a book's `.m4b`.

Every file is written to a temporary name and renamed into place, so a crash never leaves half a file
under the final name. Assembly streams chunk files one at a time: a long chapter is never held whole.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from schemas.errors import PermanentError
from schemas.status import AudioFormat, BreakKind

# Silence after a chunk, by what follows it (seconds). NONE: the chunk was cut mid-sentence.
PAUSE_S = {BreakKind.NONE: 0.05, BreakKind.SENTENCE: 0.3, BreakKind.PARAGRAPH: 0.7, BreakKind.CHAPTER: 1.5}
_SF_FORMAT = {AudioFormat.WAV: ("WAV", "PCM_16"), AudioFormat.FLAC: ("FLAC", "PCM_16"),
              AudioFormat.OGG: ("OGG", "VORBIS")}


@dataclass(frozen=True, slots=True)
class AssemblyPiece:
    """One chunk's stored audio, what it says and what follows it."""

    path: Path
    text: str
    break_after: BreakKind


@dataclass(frozen=True, slots=True)
class AssembledAudio:
    """The job's audio file and its companions. `audio_s` is the written file's duration (frames / rate)."""

    path: Path
    audio_s: float
    sample_rate_hz: int
    manifest_path: Path
    srt_path: Path
    vtt_path: Path


@contextmanager
def _atomic(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_chunk(path: Path, samples: np.ndarray, sample_rate_hz: int) -> None:
    """Store one chunk's audio losslessly (float32 WAV), atomically."""
    with _atomic(path, ".wav") as tmp:
        sf.write(str(tmp), np.asarray(samples, dtype=np.float32), sample_rate_hz, subtype="FLOAT", format="WAV")


def read_chunk(path: Path) -> np.ndarray:
    samples, _ = sf.read(str(path), dtype="float32", always_2d=False)
    return np.asarray(samples, dtype=np.float32)


def assemble(pieces: Sequence[AssemblyPiece], sample_rate_hz: int, fmt: AudioFormat, out_path: Path, *,
             title: str | None = None, loudness_lufs: float | None = None) -> AssembledAudio:
    """Stitch `pieces` with pauses into `out_path` (`fmt`), plus `.manifest.json`, `.srt` and `.vtt` beside it.

    `loudness_lufs`: normalize integrated loudness to this target (reads the whole job into memory).
    Raises:
        PermanentError: there is nothing to assemble.
    """
    if not pieces:
        raise PermanentError("no audio to assemble")
    gain = _loudness_gain(pieces, sample_rate_hz, loudness_lufs) if loudness_lufs is not None else 1.0
    container, subtype = _SF_FORMAT[AudioFormat(fmt)]
    cues: list[dict[str, object]] = []
    with _atomic(out_path) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=sample_rate_hz, channels=1, format=container,
                          subtype=subtype) as out:
            frames = 0
            for idx, piece in enumerate(pieces):
                samples = np.clip(read_chunk(piece.path) * gain, -1.0, 1.0)
                out.write(samples)
                cues.append({"idx": idx, "text": piece.text, "start_s": frames / sample_rate_hz,
                             "end_s": (frames + len(samples)) / sample_rate_hz})
                frames += len(samples)
                if idx < len(pieces) - 1:  # no trailing silence: the last cue ends where the audio ends
                    pause = np.zeros(round(PAUSE_S[piece.break_after] * sample_rate_hz), dtype=np.float32)
                    out.write(pause)
                    frames += len(pause)
        info = sf.info(str(tmp))
    audio_s = info.frames / info.samplerate
    manifest = {"title": title, "audio_path": str(out_path), "sample_rate_hz": sample_rate_hz, "audio_s": audio_s,
                "format": AudioFormat(fmt).value, "chunks": cues}
    manifest_path = out_path.with_suffix(".manifest.json")
    with _atomic(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    srt_path, vtt_path = out_path.with_suffix(".srt"), out_path.with_suffix(".vtt")
    with _atomic(srt_path) as tmp:
        tmp.write_text(subtitles(cues, "srt"), encoding="utf-8")
    with _atomic(vtt_path) as tmp:
        tmp.write_text(subtitles(cues, "vtt"), encoding="utf-8")
    return AssembledAudio(out_path, audio_s, sample_rate_hz, manifest_path, srt_path, vtt_path)


def _loudness_gain(pieces: Sequence[AssemblyPiece], sample_rate_hz: int, target_lufs: float) -> float:
    import pyloudnorm

    parts: list[np.ndarray] = []
    for idx, piece in enumerate(pieces):  # measure what will be written, pauses included
        parts.append(read_chunk(piece.path))
        if idx < len(pieces) - 1:
            parts.append(np.zeros(round(PAUSE_S[piece.break_after] * sample_rate_hz), dtype=np.float32))
    program = np.concatenate(parts)
    if len(program) < int(0.4 * sample_rate_hz):  # the meter needs one 400 ms block
        return 1.0
    measured = pyloudnorm.Meter(sample_rate_hz).integrated_loudness(program.astype(np.float64))
    if not np.isfinite(measured):
        return 1.0
    return float(10 ** ((target_lufs - measured) / 20))


def subtitles(cues: Sequence[dict[str, object]], kind: str) -> str:
    """SRT or WebVTT text, one cue per chunk."""
    blocks = ["WEBVTT\n"] if kind == "vtt" else []
    for n, cue in enumerate(cues, start=1):
        start, end = _timestamp(float(str(cue["start_s"])), kind), _timestamp(float(str(cue["end_s"])), kind)
        text = str(cue["text"]).strip()
        blocks.append(f"{n}\n{start} --> {end}\n{text}\n" if kind == "srt" else f"{start} --> {end}\n{text}\n")
    return "\n".join(blocks)


def _timestamp(seconds: float, kind: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if kind == 'srt' else '.'}{ms:03d}"


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def build_book(chapters: Sequence[tuple[str, Path]], book_title: str, out_path: Path) -> Path | None:
    """Join chapter files into one `.m4b` (AAC) with a chapter mark per file and the book's title.

    Returns None when ffmpeg is not installed (the chapter files stay as they are).
    Raises:
        PermanentError: ffmpeg failed.
    """
    if not ffmpeg_available():
        return None
    with tempfile.TemporaryDirectory() as work:
        listing, metadata = Path(work) / "chapters.txt", Path(work) / "metadata.txt"
        listing.write_text("".join(f"file '{_ffquote(str(p.resolve()))}'\n" for _, p in chapters), encoding="utf-8")
        metadata.write_text(_ffmetadata(chapters, book_title), encoding="utf-8")
        with _atomic(out_path, ".m4b") as tmp:
            cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                   "-i", str(metadata), "-map", "0:a", "-map_metadata", "1", "-map_chapters", "1", "-c:a", "aac",
                   "-b:a", "64k", "-f", "mp4", str(tmp)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise PermanentError(f"ffmpeg could not build {out_path.name}: {result.stderr.strip()[:300]}")
    return out_path


def _ffmetadata(chapters: Sequence[tuple[str, Path]], book_title: str) -> str:
    lines = [";FFMETADATA1", f"title={_ffescape(book_title)}", f"album={_ffescape(book_title)}", ""]
    start_ms = 0
    for title, path in chapters:
        info = sf.info(str(path))
        end_ms = start_ms + round(info.frames * 1000 / info.samplerate)
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={start_ms}", f"END={end_ms}", f"title={_ffescape(title)}", ""]
        start_ms = end_ms
    return "\n".join(lines)


def _ffescape(text: str) -> str:
    for ch in ("\\", "=", ";", "#", "\n"):
        text = text.replace(ch, "\\" + ch)
    return text


def _ffquote(path: str) -> str:
    return path.replace("'", "'\\''")
