"""A book's chapters as a person picks them: numbered in reading order (spoken and skipped alike, so the
numbers do not move when `--matter` changes what is skipped), and a selection such as `1-3,7` or a title
match (`--chapters`, the API's `chapters` field).

A selection is a comma-separated list of items: a number (`7`), a range (`1-3`, or `5-` for "5 to the
end"), or any other text, which picks every chapter whose title contains it (case-insensitive). A bad
item is refused with one line that says what the book holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.errors import InvalidInput

__all__ = ["BookRead", "Chapter", "select_chapters"]

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d*)\s*)?$")


@dataclass(frozen=True, slots=True)
class Chapter:
    """One part of a book in reading order: its number (1-based, what `--chapters` takes), title, characters
    of text, and why it is not spoken (None: it is)."""

    index: int
    title: str
    chars: int
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class BookRead:
    """What reading one book file found (`read_inputs(on_book=...)`): what its `books` row stores and what
    `--list-chapters` and the API's preview show. `selected`: the chapter numbers that become jobs."""

    source: str
    title: str
    author: str | None
    language: str | None
    cover: bytes | None
    cover_type: str | None
    sha256: str
    chapters: tuple[Chapter, ...]
    selected: tuple[int, ...]
    warnings: tuple[str, ...] = ()


def select_chapters(spec: str, chapters: Sequence[Chapter], where: str) -> tuple[int, ...]:
    """The chapter numbers `spec` picks, in reading order.

    Raises:
        InvalidInput: an empty selection, a number outside the book, a range backwards, a title matched by
            no chapter, or a chapter that is skipped (with why, and that `--matter all` reads it).
    """
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise InvalidInput(f"{where}: --chapters is empty; give numbers (1-3,7) or a title to match")
    total = len(chapters)
    picked: set[int] = set()
    for item in filter(None, items):
        picked |= _item(item, chapters, total, where)
    return tuple(sorted(picked))


def _item(item: str, chapters: Sequence[Chapter], total: int, where: str) -> set[int]:
    number = _RANGE.match(item)
    if number is None:
        found = [c for c in chapters if item.casefold() in c.title.casefold()]
        spoken = {c.index for c in found if c.skipped is None}
        if not spoken:
            raise InvalidInput(f"{where}: no chapter title contains \"{item}\"" + (
                f" (only skipped ones: {', '.join(_named(c) for c in found[:3])})" if found else
                f"; the book has chapters 1-{total} (--list-chapters shows them)"))
        return spoken
    first = int(number.group(1))
    last = first if number.group(2) is None else int(number.group(2) or total)
    if first < 1 or last > total or first > last:
        raise InvalidInput(f"{where}: chapters {item} are not in the book: it has chapters 1-{total} "
                           "(--list-chapters shows them)" if first <= last else
                           f"{where}: chapters {item} run backwards; write {last}-{first}")
    wanted = [c for c in chapters if first <= c.index <= last]
    skipped = [c for c in wanted if c.skipped is not None]
    if first == last and skipped:
        raise InvalidInput(f"{where}: chapter {_named(skipped[0])} is skipped ({skipped[0].skipped}); "
                           "--matter all reads it")
    spoken = {c.index for c in wanted if c.skipped is None}
    if not spoken:
        raise InvalidInput(f"{where}: chapters {item} are all skipped; --matter all reads them")
    return spoken


def _named(chapter: Chapter) -> str:
    return f"{chapter.index} \"{chapter.title}\""
