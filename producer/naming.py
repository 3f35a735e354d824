"""Output file names: a job's audio is named after its input, not after its id.

`story.txt` becomes `story.wav`; a JSONL line its id (else `notices-3.wav` for line 3); a book's
chapters `Book Title/01 - Chapter Title.wav`, beside the book's `Book Title.m4b`. Names are made safe
for every common filesystem with pathvalidate. A name already taken by another job gets the first free
` (2)`, ` (3)`, ... — a book as a whole folder, so its chapters always stay together — which makes the
choice deterministic for a given store. The job id stays in the manifest and in `status --json`.
`assign_names` chooses them at submit, looking names up exactly, so its cost does not grow with the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import PurePosixPath

from pathvalidate import sanitize_filename
from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.messages import JobRequest
from schemas.tables import Job

__all__ = ["MAX_NAME_CHARS", "assign_names", "book_folder", "display_title", "first_words", "free_name", "output_stem",
           "safe_name", "slug"]

MAX_NAME_CHARS = 120  # one path part; the whole name stays far below the 1024-character column


# Names made of these alone are safe everywhere as they are (pathvalidate would return them unchanged):
# the usual `notices-12`, `story`, `Chapter 3` skip its checks, which cost ~0.3 ms a name.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.,()+-]{0,118}[A-Za-z0-9_)]|[A-Za-z0-9]")
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))})


def safe_name(text: str, fallback: str = "untitled") -> str:
    """`text` as one file or folder name: no separators or reserved characters, no leading dot or
    space, at most MAX_NAME_CHARS characters; `fallback` when nothing is left."""
    if _PLAIN_NAME.fullmatch(text) and "  " not in text and text.split(".")[0].upper() not in _RESERVED:
        return text
    return sanitized(text, fallback)


def sanitized(text: str, fallback: str = "untitled") -> str:
    """`safe_name` by pathvalidate alone (what the fast path of `safe_name` must agree with)."""
    name = sanitize_filename(re.sub(r"\s+", " ", text), replacement_text="_", max_len=MAX_NAME_CHARS)
    name = name.strip().lstrip(".").strip()
    return name or fallback


def book_folder(request: JobRequest) -> str:
    """The folder a book's chapters go to, before any collision suffix."""
    return safe_name(request.group_title or "book", "book")


def output_stem(request: JobRequest, fallback: str) -> str:
    """The name (without extension, before any collision suffix) of the job's audio under the output
    folder; a book chapter's includes its folder ("Book/01 - Title"). Text from stdin or from no file (the
    Python or HTTP API) is named by its first words ("the-quick-brown-fox-jumps-over"), else `fallback`
    (its job id)."""
    if request.group_title is not None:
        number = (request.group_index or 0) + 1
        title = safe_name(request.title or f"Chapter {number}", f"Chapter {number}")
        return f"{book_folder(request)}/{number:02d} - {title}"
    if request.id is not None:
        return safe_name(request.id)
    if request.source is None or request.source == "stdin":  # text without a name: its first words
        return safe_name(slug(first_words(request.text)) or fallback, fallback)
    source = request.source
    line = re.fullmatch(r"(?P<file>.+):(?P<line>\d+)", source)
    if line:  # a JSONL line without an id: the file's name and the line number
        return safe_name(f"{PurePosixPath(line['file']).stem}-{line['line']}")
    return safe_name(PurePosixPath(source.replace("\\", "/")).stem or source, "stdin")


FIRST_WORDS = 6  # words of a text that name it
FIRST_WORDS_CHARS = 48
_SPOKEN_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_MARKUP = re.compile(r"<[^>]*>")


def first_words(text: str) -> str:
    """The opening words of a text (SSML tags left out), at most FIRST_WORDS of them and about
    FIRST_WORDS_CHARS characters: "The quick brown fox jumps over"; "" when it has none."""
    head = text[:2000]
    if head.lstrip().startswith("<"):
        head = _MARKUP.sub(" ", head)
    found: list[str] = []
    for m in _SPOKEN_WORD.finditer(head):
        if len(found) == FIRST_WORDS or (found and len(" ".join([*found, m[0]])) > FIRST_WORDS_CHARS):
            break
        found.append(m[0][:FIRST_WORDS_CHARS])
    return " ".join(found)


def slug(words: str) -> str:
    """Lower-case words joined by hyphens: "the-quick-brown-fox" (apostrophes dropped: "theyll")."""
    return re.sub(r"[^\w]+", "-", re.sub(r"['’]", "", words.lower())).strip("-_")


def display_title(title: str | None, source: str | None, text: str) -> str | None:
    """What a job is called where it is listed (`run`, `status`, the dashboard): its own title, else its
    file's name, else its first words (stdin, a JSONL line, the HTTP API)."""
    if title:
        return title
    if source is not None and source != "stdin" and not re.fullmatch(r".+:\d+", source):
        return PurePosixPath(source.replace("\\", "/")).name or None
    return first_words(text) or None


def free_name(stem: str, suffix: str, taken: Callable[[str], bool]) -> str:
    """The first of `stem+suffix`, `stem (2)+suffix`, ... for which `taken` is False."""
    candidate, number = stem + suffix, 1
    while taken(candidate):
        number += 1
        candidate = f"{stem} ({number}){suffix}"
    return candidate


IN_LIST_MAX = 5_000  # values in one SQL `IN (...)` list: well under SQLite's limit of bound parameters
NAMES_AHEAD = 4  # numbered names tried per job and query ("x.wav", "x (2).wav", ...)


def assign_names(session: Session, wanted: Sequence[tuple[str, str, str | None]]) -> list[str]:
    """The output name of each `(stem, suffix, book group)`: the first free one in the store and among the
    earlier ones here. A book gets one folder for all its chapters (the one its group already has, else
    the first free one). Names are looked up exactly (`IN` on the unique index), a few numbers ahead at a
    time: the cost per job does not grow with the store (a prefix search would read every earlier
    `notices-1...` name)."""
    folders: dict[str, str] = {}
    stems: list[tuple[str, str]] = []
    for stem, suffix, group in wanted:
        if group is None:
            stems.append((stem, suffix))
            continue
        folder, chapter = stem.split("/", 1)
        if group not in folders:
            existing = session.scalar(select(Job.output_name).where(Job.group_id == group,
                                                                    Job.output_name.is_not(None)).limit(1))
            folders[group] = existing.split("/")[0] if existing else free_name(
                folder, "", partial(_folder_taken, session, group, folders))
        stems.append((f"{folders[group]}/{chapter}", suffix))
    return _first_free(session, stems)


def _first_free(session: Session, stems: list[tuple[str, str]]) -> list[str]:
    chosen: set[str] = set()
    found: list[str] = [""] * len(stems)
    start = [1] * len(stems)
    left = list(range(len(stems)))
    while left:
        names = {i: [_numbered(*stems[i], n) for n in range(start[i], start[i] + NAMES_AHEAD)] for i in left}
        every = sorted({name for tried in names.values() for name in tried})
        taken = {n for i in range(0, len(every), IN_LIST_MAX)
                 for n in session.scalars(select(Job.output_name).where(Job.output_name.in_(every[i:i + IN_LIST_MAX])))}
        still = []
        for i in left:
            free = next((n for n in names[i] if n not in taken and n not in chosen), None)
            if free is None:
                start[i] += NAMES_AHEAD
                still.append(i)
            else:
                chosen.add(free)
                found[i] = free
        left = still
    return found


def _numbered(stem: str, suffix: str, number: int) -> str:
    return stem + suffix if number == 1 else f"{stem} ({number}){suffix}"


def _folder_taken(session: Session, group: str, folders: dict[str, str], folder: str) -> bool:
    """Whether another book (in the store or in this submission) has `folder`, or a file its `.m4b` name."""
    if any(f == folder for g, f in folders.items() if g != group):
        return True
    owners = session.scalars(select(Job.group_id).where(Job.output_name.startswith(folder + "/", autoescape=True)))
    return any(owner != group for owner in owners) or session.scalar(
        select(Job.id).where(Job.output_name == folder + ".m4b").limit(1)) is not None
