"""Output file names: a job's audio is named after its input, not after its id.

`story.txt` becomes `story.wav`; a JSONL line its id (else `notices-3.wav` for line 3); a book's
chapters `Book Title/01 - Chapter Title.wav`, beside the book's `Book Title.m4b`. Names are made safe
for every common filesystem with pathvalidate. A name already taken by another job gets the first free
` (2)`, ` (3)`, ... — a book as a whole folder, so its chapters always stay together — which makes the
choice deterministic for a given store. The job id stays in the manifest and in `status --json`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

from pathvalidate import sanitize_filename

from schemas.messages import JobRequest

__all__ = ["MAX_NAME_CHARS", "book_folder", "free_name", "output_stem", "safe_name"]

MAX_NAME_CHARS = 120  # one path part; the whole name stays far below the 1024-character column


def safe_name(text: str, fallback: str = "untitled") -> str:
    """`text` as one file or folder name: no separators or reserved characters, no leading dot or
    space, at most MAX_NAME_CHARS characters; `fallback` when nothing is left."""
    name = sanitize_filename(re.sub(r"\s+", " ", text), replacement_text="_", max_len=MAX_NAME_CHARS)
    name = name.strip().lstrip(".").strip()
    return name or fallback


def book_folder(request: JobRequest) -> str:
    """The folder a book's chapters go to, before any collision suffix."""
    return safe_name(request.group_title or "book", "book")


def output_stem(request: JobRequest, fallback: str) -> str:
    """The name (without extension, before any collision suffix) of the job's audio under the output
    folder; a book chapter's includes its folder ("Book/01 - Title"). A request from no file (the Python
    or HTTP API) is named `fallback` (its job id)."""
    if request.group_title is not None:
        number = (request.group_index or 0) + 1
        title = safe_name(request.title or f"Chapter {number}", f"Chapter {number}")
        return f"{book_folder(request)}/{number:02d} - {title}"
    if request.id is not None:
        return safe_name(request.id)
    if request.source is None:
        return safe_name(fallback)
    source = request.source
    line = re.fullmatch(r"(?P<file>.+):(?P<line>\d+)", source)
    if line:  # a JSONL line without an id: the file's name and the line number
        return safe_name(f"{PurePosixPath(line['file']).stem}-{line['line']}")
    return safe_name(PurePosixPath(source.replace("\\", "/")).stem or source, "stdin")


def free_name(stem: str, suffix: str, taken: Callable[[str], bool]) -> str:
    """The first of `stem+suffix`, `stem (2)+suffix`, ... for which `taken` is False."""
    candidate, number = stem + suffix, 1
    while taken(candidate):
        number += 1
        candidate = f"{stem} ({number}){suffix}"
    return candidate
