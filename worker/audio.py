"""Audio files: chunk audio stored as it is made, stitched into a job's file, subtitles and books.

Chunks are float32 WAV (lossless, so re-assembly after a crash gives the same file). `assemble`
streams them from disk one at a time, inserting a pause after each chunk that depends on what follows
it (`BreakKind`), and writes the job's audio (wav/flac: 16-bit PCM, ogg: Vorbis), a JSON manifest
with every chunk's start and end time, and `.srt`/`.vtt` subtitles from it. Every file is written to
a temporary name and moved into place, so a crash never leaves half a file. `build_book` joins
chapter files into one `.m4b` with chapter marks (needs ffmpeg). No torch here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from schemas.errors import PermanentError
from schemas.status import AudioFormat, BreakKind

__all__ = ["PAUSE_S", "AssembledAudio", "AssemblyPiece", "Tags", "assemble", "build_book", "discard",
           "ffmpeg_available", "publish", "read_chunk", "write_chunk"]

# Silence inserted after a chunk, by what follows it; nothing after the last chunk.
PAUSE_S = {BreakKind.NONE: 0.08, BreakKind.LINE: 0.25, BreakKind.SENTENCE: 0.35, BreakKind.PARAGRAPH: 0.8,
           BreakKind.HEADING: 1.2, BreakKind.CHAPTER: 2.0}
FADE_S = 0.005  # ramp at each chunk edge: a chunk ending off zero would click against the pause
_SOUNDFILE = {AudioFormat.WAV: ("WAV", "PCM_16"), AudioFormat.FLAC: ("FLAC", "PCM_16"),
              AudioFormat.OGG: ("OGG", "VORBIS")}
_PEAK_LIMIT = 0.98  # loudness gain is capped so the peak stays below this (no clipping)
_SUBTITLE_WIDTH = 42  # characters per subtitle line


@dataclass(frozen=True, slots=True)
class AssemblyPiece:
    """One stored chunk: its audio file, its text (for the manifest and subtitles) and the break after it."""

    path: Path
    text: str
    break_after: BreakKind


@dataclass(frozen=True, slots=True)
class AssembledAudio:
    """The job's audio and its side files; `audio_s` is the written file's frames / rate."""

    path: Path
    audio_s: float
    sample_rate_hz: int
    manifest_path: Path
    srt_path: Path
    vtt_path: Path


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path`, moved onto it only if the block finishes; removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_chunk(path: Path, samples: np.ndarray, sample_rate_hz: int) -> None:
    """Store one chunk's mono audio as float32 WAV, atomically.

    Raises:
        ValueError: `samples` is not one-dimensional or holds NaN/inf.
    """
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim != 1:
        data = data.squeeze()
        if data.ndim != 1:
            raise ValueError(f"chunk audio must be mono (1-D), got shape {samples.shape}")
    if not np.isfinite(data).all():
        raise ValueError("chunk audio holds NaN or infinite samples")
    with _atomic_path(path) as tmp:
        sf.write(tmp, data, sample_rate_hz, format="WAV", subtype="FLOAT")


def read_chunk(path: Path) -> np.ndarray:
    """A stored chunk's samples, float32 mono. Raises `sf.LibsndfileError` if missing or unreadable."""
    data, _rate = sf.read(path, dtype="float32", always_2d=False)
    return np.asarray(data if data.ndim == 1 else data.mean(axis=1), dtype=np.float32)


def _faded(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    ramp = min(int(FADE_S * sample_rate_hz), len(samples) // 2)
    if ramp <= 0:
        return samples
    out = samples.copy()
    window = np.linspace(0.0, 1.0, ramp, endpoint=False, dtype=np.float32)
    out[:ramp] *= window
    out[-ramp:] *= window[::-1]
    return out


def _pieces_audio(pieces: Sequence[AssemblyPiece], sample_rate_hz: int) -> Iterator[tuple[np.ndarray, int]]:
    """Each chunk's (faded) samples and the pause frames that follow it, one chunk in memory at a time."""
    for index, piece in enumerate(pieces):
        rate = sf.info(str(piece.path)).samplerate
        samples = read_chunk(piece.path)
        if rate != sample_rate_hz:
            raise PermanentError(f"{piece.path}: chunk is {rate} Hz, the job is {sample_rate_hz} Hz")
        last = index == len(pieces) - 1
        pause = 0 if last else round(PAUSE_S[piece.break_after] * sample_rate_hz)
        yield _faded(samples, sample_rate_hz), pause


def _loudness_gain(pieces: Sequence[AssemblyPiece], sample_rate_hz: int, target_lufs: float) -> float:
    """Linear gain bringing the job to `target_lufs` (ITU-R BS.1770 via pyloudnorm), peak-limited.

    Measures the whole job, so it holds one job's audio (one chapter of a book) in memory once.
    Returns 1.0 for audio too short (< 0.4 s) or too quiet to measure.
    """
    import pyloudnorm

    parts: list[np.ndarray] = []
    for samples, pause in _pieces_audio(pieces, sample_rate_hz):
        parts += [samples, np.zeros(pause, dtype=np.float32)]
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    if len(audio) < int(0.4 * sample_rate_hz) + 1:
        return 1.0
    measured = pyloudnorm.Meter(sample_rate_hz).integrated_loudness(audio.astype(np.float64))
    if not np.isfinite(measured):
        return 1.0
    gain = float(10 ** ((target_lufs - measured) / 20))
    peak = float(np.max(np.abs(audio)))
    return min(gain, _PEAK_LIMIT / peak) if peak > 0 else gain


@dataclass(frozen=True, slots=True)
class Tags:
    """What a job's audio file is tagged with: a book chapter's book (album), author (artist) and number."""

    title: str | None = None
    album: str | None = None
    artist: str | None = None
    track: int | None = None


def assemble(pieces: Sequence[AssemblyPiece], sample_rate_hz: int, fmt: AudioFormat, out_path: Path, *,
             title: str | None = None, loudness_lufs: float | None = None, job_id: str | None = None,
             tags: Tags | None = None) -> AssembledAudio:
    """Stitch chunk files into `out_path` with pauses by break kind; write manifest and subtitles beside it.

    The file is tagged with `title` and `tags` (WAV INFO, FLAC/Ogg Vorbis comments); `job_id` goes into
    the manifest, which is how a file named after its input is traced back to its job.

    `loudness_lufs` (e.g. -18 for speech, -16 for podcasts) normalizes integrated loudness, capped so
    the peak stays below -0.2 dBFS. Side files: `out_path` with `.manifest.json`, `.srt` and `.vtt` suffixes.
    Every file is replaced atomically.

    Raises:
        PermanentError: no pieces, or a chunk's sample rate differs from `sample_rate_hz`.
        soundfile.LibsndfileError: a chunk file is missing or unreadable.
        OSError: the output cannot be written.
    """
    if not pieces:
        raise PermanentError("no audio to assemble")
    gain = _loudness_gain(pieces, sample_rate_hz, loudness_lufs) if loudness_lufs is not None else 1.0
    container, subtype = _SOUNDFILE[AudioFormat(fmt)]
    cues: list[dict[str, Any]] = []
    with _atomic_path(out_path) as tmp:
        with sf.SoundFile(tmp, "w", samplerate=sample_rate_hz, channels=1, format=container,
                          subtype=subtype) as out:
            _tag(out, tags or Tags(), title)
            frames = 0
            for piece, (samples, pause) in zip(pieces, _pieces_audio(pieces, sample_rate_hz), strict=True):
                out.write(np.clip(samples * gain, -1.0, 1.0))
                cues.append({"idx": len(cues), "text": piece.text.strip(), "start_frame": frames,
                             "end_frame": frames + len(samples), "break_after": str(piece.break_after)})
                frames += len(samples)
                if pause:
                    out.write(np.zeros(pause, dtype=np.float32))
                    frames += pause
        written = sf.info(str(tmp)).frames
    audio_s = written / sample_rate_hz
    manifest = {"job_id": job_id, **_manifest(out_path, cues, written, sample_rate_hz, fmt, title, gain)}
    paths = [out_path.with_suffix(s) for s in (".manifest.json", ".srt", ".vtt")]
    texts = [json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", to_srt(manifest["chunks"]),
             to_vtt(manifest["chunks"])]
    for path, text in zip(paths, texts, strict=True):
        with _atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return AssembledAudio(out_path, audio_s, sample_rate_hz, *paths)


def _tag(out: sf.SoundFile, tags: Tags, title: str | None) -> None:
    for name, value in (("title", tags.title or title), ("album", tags.album), ("artist", tags.artist),
                        ("tracknumber", str(tags.track) if tags.track is not None else None)):
        if value:
            setattr(out, name, value)


def publish(staged: AssembledAudio, out_path: Path) -> AssembledAudio:
    """Move a job's staged audio and side files onto `out_path` (and its `.manifest.json`, `.srt`, `.vtt`),
    each by an atomic rename; the staging folder must be on the same filesystem. Returns the final paths.

    Raises:
        OSError: a file cannot be moved.
    """
    final = AssembledAudio(out_path, staged.audio_s, staged.sample_rate_hz,
                           *(out_path.with_suffix(s) for s in (".manifest.json", ".srt", ".vtt")))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(_files(staged), _files(final), strict=True):
        os.replace(src, dst)
    return final


def discard(staged: AssembledAudio) -> None:
    """Remove staged files that will not be published (a job this worker no longer holds)."""
    for path in _files(staged):
        path.unlink(missing_ok=True)
    try:
        staged.path.parent.rmdir()  # the attempt's staging folder, if nothing else is in it
    except OSError:
        pass


def _files(assembled: AssembledAudio) -> tuple[Path, Path, Path, Path]:
    return assembled.path, assembled.manifest_path, assembled.srt_path, assembled.vtt_path


def _manifest(out_path: Path, cues: list[dict[str, Any]], frames: int, sample_rate_hz: int, fmt: AudioFormat,
              title: str | None, gain: float) -> dict[str, Any]:
    """The manifest: times in seconds from frame counts; the last chunk ends at the file's end."""
    chunks = []
    for cue in cues:
        end_frame = min(cue["end_frame"], frames)
        if cue is cues[-1]:
            end_frame = frames  # whatever the encoder padded belongs to the last chunk
        chunks.append({"idx": cue["idx"], "text": cue["text"], "break_after": cue["break_after"],
                       "start_s": min(cue["start_frame"], frames) / sample_rate_hz,
                       "end_s": end_frame / sample_rate_hz})
    return {"audio": out_path.name, "format": str(fmt), "title": title, "sample_rate_hz": sample_rate_hz,
            "audio_s": frames / sample_rate_hz, "gain_db": round(20 * float(np.log10(gain)), 2),
            "chunks": chunks}


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def _cues(chunks: Sequence[dict[str, Any]]) -> Iterator[tuple[float, float, str]]:
    for chunk in chunks:
        if chunk["end_s"] > chunk["start_s"] and chunk["text"]:
            lines = "\n".join(textwrap.wrap(chunk["text"], _SUBTITLE_WIDTH)) or chunk["text"]
            yield chunk["start_s"], chunk["end_s"], lines


def to_srt(chunks: Sequence[dict[str, Any]]) -> str:
    """SubRip subtitles: one cue per chunk with audio, times from the manifest."""
    blocks = [f"{n}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
              for n, (start, end, text) in enumerate(_cues(chunks), 1)]
    return "\n".join(blocks)


def to_vtt(chunks: Sequence[dict[str, Any]]) -> str:
    """WebVTT subtitles: the same cues as `to_srt`."""
    blocks = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text.replace('-->', '->')}\n"
              for start, end, text in _cues(chunks)]
    return "WEBVTT\n\n" + "\n".join(blocks)


# ---------------------------------------------------------------------------------------------- books

def ffmpeg_available() -> bool:
    """True when an `ffmpeg` executable is on PATH (needed for `.m4b` books only)."""
    return shutil.which("ffmpeg") is not None


def _meta_escape(value: str) -> str:
    """Escape for ffmpeg's FFMETADATA format: `=`, `;`, `#`, `\\` and newlines take a backslash."""
    out = value
    for ch in ("\\", "=", ";", "#", "\n"):
        out = out.replace(ch, "\\" + ch)
    return out


def chapter_metadata(chapters: Sequence[tuple[str, Path]], book_title: str, author: str | None = None) -> str:
    """FFMETADATA1 text with one [CHAPTER] per file, in milliseconds from cumulative frame counts
    (so rounding never drifts across a long book)."""
    lines = [";FFMETADATA1", f"title={_meta_escape(book_title)}", f"album={_meta_escape(book_title)}",
             "genre=Audiobook"]
    if author:
        lines += [f"artist={_meta_escape(author)}", f"album_artist={_meta_escape(author)}"]
    elapsed_s = 0.0
    for title, path in chapters:
        info = sf.info(str(path))
        start_ms = round(elapsed_s * 1000)
        elapsed_s += info.frames / info.samplerate
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={start_ms}", f"END={round(elapsed_s * 1000)}",
                  f"title={_meta_escape(title)}"]
    return "\n".join(lines) + "\n"


def build_book(chapters: Sequence[tuple[str, Path]], book_title: str, out_path: Path, *,
               author: str | None = None, cover: bytes | None = None) -> Path | None:
    """Join chapter files (in the order given) into one AAC `.m4b` with chapter marks, the book title,
    its `author` (artist) and its `cover` image (JPEG or PNG bytes, an attached picture).

    Returns `out_path`, or None when ffmpeg is not installed (the caller says so; the chapter files
    are complete on their own).

    Raises:
        ValueError: no chapters.
        PermanentError: ffmpeg failed (its last error line is in the message).
    """
    if not chapters:
        raise ValueError("a book needs at least one chapter")
    if not ffmpeg_available():
        return None
    with tempfile.TemporaryDirectory(prefix="ttsfleet-book-") as work_dir:
        work = Path(work_dir)
        (work / "meta.txt").write_text(chapter_metadata(chapters, book_title, author), encoding="utf-8")
        picture: list[str] = []
        if cover:
            (work / "cover").write_bytes(cover)
            picture = ["-i", str(work / "cover"), "-map", "2:v", "-c:v", "copy", "-disposition:v:0", "attached_pic"]
        listing = "".join("file '" + str(p.resolve()).replace("'", "'\\''") + "'\n" for _, p in chapters)
        (work / "list.txt").write_text(listing, encoding="utf-8")
        with _atomic_path(out_path) as tmp:
            command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                       "-f", "concat", "-safe", "0", "-i", str(work / "list.txt"),
                       "-i", str(work / "meta.txt"), *picture[:2], "-map", "0:a", *picture[2:],
                       "-map_metadata", "1", "-map_chapters", "1", "-c:a", "aac", "-b:a", "64k",
                       "-movflags", "+faststart", "-f", "mp4", str(tmp)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise PermanentError(f"ffmpeg could not build {out_path.name}: {reason}")
    return out_path
