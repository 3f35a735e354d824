"""How books are read, and what is reported when a part of one is left out.

Plain data with no heavy imports, so that the command line can declare its options from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BookOptions", "Matter", "Notes", "Skipped"]


class Matter(StrEnum):
    """Which parts of a book are spoken: `body` (no imprint, colophon, index, ...) or `all`."""

    BODY = "body"
    ALL = "all"


class Notes(StrEnum):
    """Notes: `skip` them (the default) or read each `after` the paragraph that refers to it."""

    SKIP = "skip"
    AFTER = "after"


@dataclass(frozen=True, slots=True)
class BookOptions:
    """How books are read. `language` is the voice's (for "Chapter Three" and "by"); None: the book's.
    `chapters`: which chapters are spoken (`--chapters 1-3,7` or a title match; producer/chapters.py);
    None: every one not skipped."""

    matter: Matter = Matter.BODY
    notes: Notes = Notes.SKIP
    captions: bool = False
    language: str | None = None
    chapters: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A part of a book that is not spoken, and why; `str()` is the one line `submit` prints."""

    source: str
    section: str
    title: str | None
    reason: str

    def __str__(self) -> str:
        title = f" \"{self.title}\"" if self.title else ""
        return f"{self.source}: skipped {self.section}{title}: {self.reason} (--matter all reads it)"
