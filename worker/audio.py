"""A job's audio: chunk audio stored as it is made, stitched into the job's file with pauses, subtitles.

A long job's chunk audio is stored as 16-bit PCM WAV (`write_chunks`: the chunks of one engine batch in
one file, written with the standard library's `wave`, flushed to disk before its rows are committed); a
short job's chunks stay in memory until its file is made. `assemble` takes each chunk's samples (in
memory, or read back from a stored range) in order, inserting a pause after each chunk that depends on
what follows it (`BreakKind`), and writes the job's audio (wav/flac: 16-bit PCM, ogg: Vorbis), a JSON
manifest with every chunk's start and end time, and `.srt`/`.vtt` subtitles from it, under the names it
is given (a private staging folder: `publish` moves them into place). No torch here.
"""

from __future__ import annotations

import functools
import io
import json
import os
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from schemas.errors import PermanentError
from schemas.status import AudioFormat, BreakKind
from worker import subtitles

__all__ = ["PAUSE_S", "AssembledAudio", "AssemblyPiece", "StoredAudio", "Tags", "assemble", "atomic_path",
           "discard", "publish", "read_chunk", "write_chunk", "write_chunks"]

# Silence inserted after a chunk, by what follows it; nothing after the last chunk.
PAUSE_S = {BreakKind.NONE: 0.08, BreakKind.LINE: 0.25, BreakKind.SENTENCE: 0.35, BreakKind.PARAGRAPH: 0.8,
           BreakKind.HEADING: 1.2, BreakKind.CHAPTER: 2.0}
FADE_S = 0.005  # ramp at each chunk edge: a chunk ending off zero would click against the pause
_SOUNDFILE = {AudioFormat.WAV: ("WAV", "PCM_16"), AudioFormat.FLAC: ("FLAC", "PCM_16"),
              AudioFormat.OGG: ("OGG", "VORBIS")}
_PEAK_LIMIT = 0.98  # loudness gain is capped so the peak stays below this (no clipping)


@dataclass(frozen=True, slots=True)
class StoredAudio:
    """A stored chunk's audio: `frames` samples from `offset` in the file at `path` (None: the whole file)."""

    path: Path
    offset: int | None = None
    frames: int | None = None


@dataclass(frozen=True, slots=True)
class AssemblyPiece:
    """One chunk: its audio (samples in memory, a file, or a range of one), its spoken text (for the
    manifest), the break after it, and the written text it says (for subtitles; None: the spoken text, "":
    it goes on with the written text of the chunk before)."""

    audio: np.ndarray | Path | StoredAudio
    text: str
    break_after: BreakKind
    written: str | None = None


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
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path`, moved onto it only if the block finishes; removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples as 16-bit PCM (clipped to [-1, 1]).

    Raises:
        ValueError: `samples` is not one-dimensional or holds NaN/inf.
    """
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim != 1:
        data = data.squeeze()
        if data.ndim != 1:
            raise ValueError(f"chunk audio must be mono (1-D), got shape {samples.shape}")
    return _to_pcm16(np.multiply(data, np.float32(32767.0), dtype=np.float32))


def _to_pcm16(scaled: np.ndarray) -> np.ndarray:
    """Samples already scaled to 16-bit range (a float32 array of our own, changed in place) as 16-bit PCM.

    Raises:
        ValueError: a sample is NaN or infinite.
    """
    # One sum finds NaN or infinity anywhere (they propagate); a full check only names the problem.
    if not np.isfinite(np.sum(scaled, dtype=np.float64)) and not np.isfinite(scaled).all():
        raise ValueError("chunk audio holds NaN or infinite samples")
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return np.rint(scaled, out=scaled).astype("<i2")


def write_chunks(path: Path, chunks: Sequence[np.ndarray], sample_rate_hz: int, *, flush: bool = True) -> list[int]:
    """Store the chunks' mono audio one after another in one 16-bit PCM WAV file, atomically; returns where
    each starts (in samples). `flush`: the file is on disk (fsync) before this returns.

    Written with the standard library's `wave`: libsndfile's open and float conversion cost ~2 ms per
    5-second chunk here, `wave` and numpy ~0.3 ms (docs/benchmarks.md), and a card makes a chunk in less.

    Raises:
        ValueError: a chunk is not one-dimensional or holds NaN/inf (nothing is written).
    """
    pcm = [_pcm16(c) for c in chunks]
    offsets = np.cumsum([0] + [len(p) for p in pcm[:-1]]).tolist()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, wave.open(raw, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate_hz)
            for part in pcm:  # no joined copy of a batch's audio
                out.writeframesraw(part.data.cast("B"))
            if flush:
                raw.flush()
                os.fsync(raw.fileno())
    return [int(o) for o in offsets]


def write_chunk(path: Path, samples: np.ndarray, sample_rate_hz: int) -> None:
    """Store one chunk's mono audio (16-bit PCM WAV), atomically. Raises ValueError as `write_chunks`."""
    write_chunks(path, [samples], sample_rate_hz, flush=False)


def _read_pcm16(path: Path, offset: int | None, frames: int | None, sample_rate_hz: int | None) -> np.ndarray | None:
    """A stored chunk's 16-bit samples as they are (read-only), or None when the file is not 16-bit mono PCM."""
    try:
        with wave.open(str(path), "rb") as source:
            if source.getsampwidth() != 2 or source.getnchannels() != 1:
                return None
            _check_rate(path, source.getframerate(), sample_rate_hz)
            source.setpos(offset or 0)
            count = frames if frames is not None else source.getnframes() - (offset or 0)
            return np.frombuffer(source.readframes(count), dtype="<i2")
    except (wave.Error, EOFError):
        return None  # not PCM (a float chunk stored by an earlier version): libsndfile reads it
    except FileNotFoundError as err:
        raise sf.LibsndfileError(2, f"{path}: ") from err


def read_chunk(path: Path, offset: int | None = None, frames: int | None = None,
               sample_rate_hz: int | None = None) -> np.ndarray:
    """A stored chunk's samples, float32 mono: the whole file, or `frames` samples from `offset`.

    Raises:
        PermanentError: the file's sample rate is not `sample_rate_hz` (when given).
        soundfile.LibsndfileError: the file is missing or unreadable.
    """
    pcm = _read_pcm16(path, offset, frames, sample_rate_hz)
    if pcm is not None:
        return pcm.astype(np.float32) / np.float32(32767.0)
    start, stop = (offset or 0), (None if frames is None else (offset or 0) + frames)
    with sf.SoundFile(str(path)) as source:
        _check_rate(path, source.samplerate, sample_rate_hz)
        source.seek(start)
        data = source.read(-1 if stop is None else stop - start, dtype="float32", always_2d=False)
    return np.asarray(data if data.ndim == 1 else data.mean(axis=1), dtype=np.float32)


def _check_rate(path: Path, found: int, wanted: int | None) -> None:
    if wanted is not None and found != wanted:
        raise PermanentError(f"{path}: chunk is {found} Hz, the job is {wanted} Hz")


def _faded(samples: np.ndarray, sample_rate_hz: int, gain: float = 1.0) -> np.ndarray:
    """The chunk times `gain`, with a short ramp in and out (a new array: the chunk's own is left alone)."""
    out = np.multiply(samples, np.float32(gain), dtype=np.float32)
    return _ramped(out, sample_rate_hz)


def _ramped(out: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """`out` with a FADE_S ramp in and out, in place."""
    ramp = min(int(FADE_S * sample_rate_hz), len(out) // 2)
    if ramp > 0:
        window = _ramp(ramp)
        out[:ramp] *= window
        out[-ramp:] *= window[::-1]
    return out


@functools.lru_cache(maxsize=8)
def _ramp(frames: int) -> np.ndarray:
    window = np.linspace(0.0, 1.0, frames, endpoint=False, dtype=np.float32)
    window.setflags(write=False)
    return window


def _samples(piece: AssemblyPiece, sample_rate_hz: int) -> np.ndarray:
    if isinstance(piece.audio, np.ndarray):
        return np.asarray(piece.audio, dtype=np.float32)
    if isinstance(piece.audio, StoredAudio):
        return read_chunk(piece.audio.path, piece.audio.offset, piece.audio.frames, sample_rate_hz)
    return read_chunk(piece.audio, sample_rate_hz=sample_rate_hz)


def _pieces_audio(pieces: Sequence[AssemblyPiece], sample_rate_hz: int,
                  gain: float = 1.0) -> Iterator[tuple[np.ndarray, int]]:
    """Each chunk's (faded, times `gain`) samples and the pause frames that follow it, one stored chunk read
    at a time."""
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        pause = 0 if last else round(PAUSE_S[piece.break_after] * sample_rate_hz)
        yield _faded(_samples(piece, sample_rate_hz), sample_rate_hz, gain), pause


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
             tags: Tags | None = None, name: str | None = None) -> AssembledAudio:
    """Stitch chunks into `out_path` with pauses by break kind; write manifest and subtitles beside it.
    `name`: the audio's file name once published, as the manifest gives it (default: `out_path`'s).

    The file is tagged with `title` and `tags` (WAV INFO, FLAC/Ogg Vorbis comments); `job_id` goes into
    the manifest, which is how a file named after its input is traced back to its job.

    `loudness_lufs` (e.g. -18 for speech, -16 for podcasts) normalizes integrated loudness, capped so
    the peak stays below -0.2 dBFS. Side files: `out_path` with `.manifest.json`, `.srt` and `.vtt` suffixes.
    Files are written under these names directly (a caller's private staging folder; `publish` moves them
    into place atomically); what was written is removed again when this raises.

    Raises:
        PermanentError: no pieces, or a stored chunk's sample rate differs from `sample_rate_hz`.
        soundfile.LibsndfileError: a chunk file is missing or unreadable.
        OSError: the output cannot be written.
    """
    if not pieces:
        raise PermanentError("no audio to assemble")
    gain = _loudness_gain(pieces, sample_rate_hz, loudness_lufs) if loudness_lufs is not None else 1.0
    tags = tags or Tags(title=title)
    paths = [out_path, *(out_path.with_suffix(s) for s in (".manifest.json", ".srt", ".vtt"))]
    if not out_path.parent.is_dir():
        out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        cues, written = _write_audio(pieces, sample_rate_hz, AudioFormat(fmt), out_path, gain,
                                     Tags(tags.title or title, tags.album, tags.artist, tags.track))
        manifest = {"job_id": job_id, **subtitles.manifest(name or out_path.name, cues, written, sample_rate_hz,
                                                           fmt, title, gain)}
        said = subtitles.cues(manifest["chunks"])
        texts = [json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", subtitles.to_srt(manifest["chunks"], said),
                 subtitles.to_vtt(manifest["chunks"], said)]
        for path, text in zip(paths[1:], texts, strict=True):
            path.write_text(text, encoding="utf-8")
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
        raise
    return AssembledAudio(out_path, written / sample_rate_hz, sample_rate_hz, *paths[1:])


MEMORY_WAV_PIECES = 16  # results of at most this many chunks are assembled in memory (see `_write_audio`)


def _write_audio(pieces: Sequence[AssemblyPiece], sample_rate_hz: int, fmt: AudioFormat, path: Path, gain: float,
                 tags: Tags) -> tuple[list[dict[str, Any]], int]:
    """Write the job's audio file; returns its cues (chunk frames) and its length in frames. An untagged
    WAV (a notice) is written by `wave` (see `write_chunks` for why), anything else by libsndfile."""
    cues: list[dict[str, Any]] = []
    frames = 0
    if fmt == AudioFormat.WAV and tags == Tags():
        # A short job's file is assembled in memory and written in one call: `wave` patches its header with
        # seeks at close, and each syscall on a results folder costs more than copying a notice's few hundred
        # kilobytes. A long job's is written as it goes (memory stays bounded).
        with io.BytesIO() if len(pieces) <= MEMORY_WAV_PIECES else open(path, "wb") as raw:
            cues, frames = _write_pcm16(raw, pieces, sample_rate_hz, gain)
            if isinstance(raw, io.BytesIO):
                with raw.getbuffer() as view:
                    path.write_bytes(view)
        return cues, frames
    chunks = _pieces_audio(pieces, sample_rate_hz, gain)
    container, subtype = _SOUNDFILE[fmt]
    with sf.SoundFile(path, "w", samplerate=sample_rate_hz, channels=1, format=container, subtype=subtype) as out:
        _tag(out, tags)
        for piece, (samples, pause) in zip(pieces, chunks, strict=True):
            cues.append(_cue(len(cues), piece, frames, len(samples)))
            out.write(np.clip(samples, -1.0, 1.0))
            if pause:
                out.write(np.zeros(pause, dtype=np.float32))
            frames += len(samples) + pause
    # Vorbis may pad its last page: the file's own length is the truth there.
    return cues, sf.info(str(path)).frames if fmt == AudioFormat.OGG else frames


def _write_pcm16(raw: Any, pieces: Sequence[AssemblyPiece], sample_rate_hz: int,
                 gain: float) -> tuple[list[dict[str, Any]], int]:
    """The pieces with their pauses as a 16-bit mono WAV into the binary file `raw`; their cues and frames."""
    cues: list[dict[str, Any]] = []
    frames = 0
    with wave.open(raw, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate_hz)
        for index, piece in enumerate(pieces):
            parts = _pcm16_parts(piece, sample_rate_hz, gain)
            length = sum(len(p) for p in parts)
            cues.append(_cue(len(cues), piece, frames, length))
            pause = 0 if index == len(pieces) - 1 else round(PAUSE_S[piece.break_after] * sample_rate_hz)
            for part in (*parts, np.zeros(pause, dtype="<i2")):
                out.writeframesraw(part.data.cast("B"))
            frames += length + pause
    return cues, frames


def _pcm16_parts(piece: AssemblyPiece, sample_rate_hz: int, gain: float) -> list[np.ndarray]:
    """A chunk as faded 16-bit PCM, in parts to write one after another. A stored 16-bit chunk at unit gain
    is written as it is but for its two short ramps (no conversion of the rest); anything else goes
    through float."""
    stored = piece.audio if isinstance(piece.audio, StoredAudio) else (
        StoredAudio(piece.audio) if isinstance(piece.audio, Path) else None)
    pcm = _read_pcm16(stored.path, stored.offset, stored.frames, sample_rate_hz) if stored and gain == 1.0 else None
    if pcm is None:
        return [_to_pcm16(_faded(_samples(piece, sample_rate_hz), sample_rate_hz, gain * 32767.0))]
    ramp = min(int(FADE_S * sample_rate_hz), len(pcm) // 2)
    if ramp <= 0:
        return [pcm]
    window = _ramp(ramp)
    head = np.rint(pcm[:ramp] * window).astype("<i2")
    tail = np.rint(pcm[-ramp:] * window[::-1]).astype("<i2")
    return [head, pcm[ramp:-ramp], tail]


def _cue(idx: int, piece: AssemblyPiece, start_frame: int, frames: int) -> dict[str, Any]:
    return {"idx": idx, "text": piece.text.strip(), "start_frame": start_frame, "end_frame": start_frame + frames,
            "break_after": piece.break_after.value,
            "written": piece.text.strip() if piece.written is None else piece.written.strip()}


def _tag(out: sf.SoundFile, tags: Tags) -> None:
    for name, value in (("title", tags.title), ("album", tags.album), ("artist", tags.artist),
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
    for src, dst in zip(_files(staged), _files(final), strict=True):
        try:
            os.replace(src, dst)
        except FileNotFoundError:  # the first result in a new folder (checked only then: a stat per file)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    return final


def discard(staged: AssembledAudio) -> None:
    """Remove staged files that will not be published (a job this worker no longer holds)."""
    for path in _files(staged):
        path.unlink(missing_ok=True)


def _files(assembled: AssembledAudio) -> tuple[Path, Path, Path, Path]:
    return assembled.path, assembled.manifest_path, assembled.srt_path, assembled.vtt_path
