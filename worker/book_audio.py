"""Books: each chapter encoded to AAC once (`encode_chapter`, as soon as it is finished), and the encoded
chapters joined into one `.m4b` without encoding again (`join_book`: ffmpeg's concat demuxer, `-c copy`)
with chapter marks, title, author and cover.

Encoding is the expensive step (the whole of Alice took 2 min 30 s in one AAC run at the end); joining
copies packets and takes moments, so a book is ready moments after its last chapter, and a re-rendered
chapter costs one chapter's encode. Chapter marks come from the encoded chapters' durations (each encode's
edit list trims the AAC priming, so they equal the chapter files' lengths); the concat demuxer places each
chapter at the sum of the durations before it, which is where its mark starts.

Separate from `worker/audio.py` (a job's own audio): a book is built from finished chapter files, after
the jobs themselves have succeeded. No torch here.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from schemas.errors import PermanentError
from worker.audio import atomic_path

__all__ = ["AAC_BITRATE", "build_book", "chapter_metadata", "encode_chapter", "encoded_duration_s",
           "ffmpeg_available", "join_book"]

AAC_BITRATE = "64k"  # speech: transparent enough at 22-24 kHz mono, a 10 h book in under 300 MB
_FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def ffmpeg_available() -> bool:
    """True when `ffmpeg` and `ffprobe` are on PATH (needed for `.m4b` books only)."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _meta_escape(value: str) -> str:
    """Escape for ffmpeg's FFMETADATA format: `=`, `;`, `#`, `\\` and newlines take a backslash."""
    out = value
    for ch in ("\\", "=", ";", "#", "\n"):
        out = out.replace(ch, "\\" + ch)
    return out


def marks_metadata(chapters: Sequence[tuple[str, float]], book_title: str, author: str | None = None) -> str:
    """FFMETADATA1 text with one [CHAPTER] per (title, seconds), in milliseconds from the running total (so
    rounding never drifts across a long book)."""
    lines = [";FFMETADATA1", f"title={_meta_escape(book_title)}", f"album={_meta_escape(book_title)}",
             "genre=Audiobook"]
    if author:
        lines += [f"artist={_meta_escape(author)}", f"album_artist={_meta_escape(author)}"]
    elapsed_s = 0.0
    for title, seconds in chapters:
        start_ms = round(elapsed_s * 1000)
        elapsed_s += seconds
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={start_ms}", f"END={round(elapsed_s * 1000)}",
                  f"title={_meta_escape(title)}"]
    return "\n".join(lines) + "\n"


def chapter_metadata(chapters: Sequence[tuple[str, Path]], book_title: str, author: str | None = None) -> str:
    """`marks_metadata` for chapter audio files, each as long as its frame count says."""
    durations = []
    for title, path in chapters:
        info = sf.info(str(path))
        durations.append((title, info.frames / info.samplerate))
    return marks_metadata(durations, book_title, author)


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise PermanentError(f"ffmpeg could not {what}: {reason}")
    return done.stdout


def encode_chapter(audio: Path, out_path: Path) -> Path | None:
    """`audio` (any format libsndfile writes) as AAC in an MP4 file (`.m4a`) at `out_path`, written
    atomically; None when ffmpeg is not installed.

    Raises:
        PermanentError: ffmpeg failed (its last error line is in the message).
    """
    if not ffmpeg_available():
        return None
    with atomic_path(out_path) as tmp:
        _run([*_FFMPEG, "-i", str(audio), "-map", "0:a", "-c:a", "aac", "-b:a", AAC_BITRATE, "-f", "mp4", str(tmp)],
             f"encode {audio.name}")
    return out_path


def encoded_duration_s(path: Path) -> float:
    """The playing time of an encoded chapter (its edit list applied), as the concat demuxer counts it.

    Raises:
        PermanentError: ffprobe could not read it.
    """
    out = _run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
               f"read the duration of {path.name}")
    try:
        return float(out.strip())
    except ValueError as err:
        raise PermanentError(f"ffprobe gave no duration for {path.name}") from err


def join_book(chapters: Sequence[tuple[str, Path, float]], book_title: str, out_path: Path, *,
              author: str | None = None, cover: bytes | None = None) -> Path | None:
    """Join encoded chapters (title, `.m4a`, seconds; in the order given) into one `.m4b` without encoding
    again: chapter marks, the book title, its `author` (artist) and `cover` (JPEG or PNG bytes, an attached
    picture). Returns `out_path`, or None when ffmpeg is not installed.

    Raises:
        ValueError: no chapters.
        PermanentError: ffmpeg failed.
    """
    if not chapters:
        raise ValueError("a book needs at least one chapter")
    if not ffmpeg_available():
        return None
    with tempfile.TemporaryDirectory(prefix="ttsfleet-book-") as work_dir:
        work = Path(work_dir)
        marks = marks_metadata([(title, seconds) for title, _, seconds in chapters], book_title, author)
        (work / "meta.txt").write_text(marks, encoding="utf-8")
        picture: list[str] = []
        if cover:
            (work / "cover").write_bytes(cover)
            picture = ["-i", str(work / "cover"), "-map", "2:v", "-c:v", "copy", "-disposition:v:0", "attached_pic"]
        listing = "".join("file '" + str(p.resolve()).replace("'", "'\\''") + "'\n" for _, p, _ in chapters)
        (work / "list.txt").write_text(listing, encoding="utf-8")
        with atomic_path(out_path) as tmp:
            _run([*_FFMPEG, "-f", "concat", "-safe", "0", "-i", str(work / "list.txt"), "-i", str(work / "meta.txt"),
                  *picture[:2], "-map", "0:a", *picture[2:], "-map_metadata", "1", "-map_chapters", "1",
                  "-c:a", "copy", "-movflags", "+faststart", "-f", "mp4", str(tmp)], f"build {out_path.name}")
    return out_path


def build_book(chapters: Sequence[tuple[str, Path]], book_title: str, out_path: Path, *,
               author: str | None = None, cover: bytes | None = None) -> Path | None:
    """Chapter audio files (title, file) encoded one by one and joined: what a worker does over a book's
    life, at once. Returns `out_path`, or None when ffmpeg is not installed.

    Raises:
        ValueError: no chapters.
        PermanentError: ffmpeg failed.
    """
    if not chapters:
        raise ValueError("a book needs at least one chapter")
    if not ffmpeg_available():
        return None
    with tempfile.TemporaryDirectory(prefix="ttsfleet-chapters-") as work_dir:
        encoded = []
        for number, (title, path) in enumerate(chapters):
            aac = encode_chapter(path, Path(work_dir) / f"{number:05d}.m4a")
            assert aac is not None  # ffmpeg is there: checked above
            encoded.append((title, aac, encoded_duration_s(aac)))
        return join_book(encoded, book_title, out_path, author=author, cover=cover)
