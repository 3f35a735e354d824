"""A book file (EPUB or PDF) read into the parts that become its chapter jobs, and what its `books` row and
chapter list say about it (`BookRead`): the chapters numbered in reading order, the selection applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from producer.book_options import BookOptions, Matter, Skipped
from producer.chapters import BookRead, Chapter, select_chapters
from producer.epub import Book, Section, read_book
from producer.text import has_speakable
from schemas.errors import InvalidInput

__all__ = ["Part", "file_sha256", "read_epub_book", "read_pdf_book"]


@dataclass(frozen=True, slots=True)
class Part:
    """One chapter job to be: its title and text, its place among the book's jobs (`group_index`, 0-based:
    the opening line first) and its number in the chapter list (`chapter`; 0: the opening line)."""

    title: str
    text: str
    group_index: int
    chapter: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _chapters(book: Book) -> list[tuple[Chapter, Section | None]]:
    found: list[tuple[Chapter, Section | None]] = []
    for number, entry in enumerate(book.entries, 1):
        if isinstance(entry, Section):
            found.append((Chapter(number, entry.title, len(entry.text)), entry))
        else:
            found.append((Chapter(number, entry.title or entry.section, 0, entry.reason), None))
    return found


def read_epub_book(path: Path, options: BookOptions) -> tuple[list[Part], BookRead, list[Skipped]]:
    """The parts to speak (the opening line, then the selected chapters), what was read, and what is skipped.

    Raises:
        InvalidInput: not a readable EPUB, nothing to speak, or a bad `options.chapters` selection.
    """
    book = read_book(path, options)
    numbered = _chapters(book)
    chapters = tuple(c for c, _ in numbered)
    spoken = tuple(c.index for c in chapters if c.skipped is None)
    if not spoken:
        raise InvalidInput(f"{path}: nothing to speak (no chapter with text)"
                           + (f"; {len(book.skipped)} section(s) skipped, --matter all reads them"
                              if book.skipped else ""))
    selected = select_chapters(options.chapters, chapters, str(path)) if options.chapters else spoken
    parts = [Part(book.title, book.intro, 0, 0)] if book.intro else []
    offset = len(parts)
    for position, (chapter, section) in enumerate((c, s) for c, s in numbered if s is not None):
        if chapter.index in selected and has_speakable(section.text):
            parts.append(Part(section.title, section.text, offset + position, chapter.index))
    read = BookRead(source=str(path), title=book.title, author=book.author, language=book.language,
                    cover=book.cover, cover_type=book.cover_type, sha256=file_sha256(path), chapters=chapters,
                    selected=selected, warnings=tuple(book.warnings))
    return parts, read, list(book.skipped) if options.matter is Matter.BODY else []


def read_pdf_book(path: Path, language: str) -> tuple[str, BookRead]:
    """A PDF's text and what was read: a book of one chapter, titled by its metadata or its file name.

    Raises:
        InvalidInput: as producer.pdf.read_pdf.
    """
    from producer.pdf import read_pdf

    text, title = read_pdf(path, language)
    name = title or path.stem
    return text, BookRead(source=str(path), title=name, author=None, language=None, cover=None, cover_type=None,
                          sha256=file_sha256(path), chapters=(Chapter(1, name, len(text)),), selected=(1,))
