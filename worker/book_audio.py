"""Books: chapter files joined into one AAC `.m4b` with chapter marks, title, author and cover (ffmpeg).

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

__all__ = ["build_book", "chapter_metadata", "ffmpeg_available"]


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
        with atomic_path(out_path) as tmp:
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
