"""EPUB books built in tests with ebooklib."""

from __future__ import annotations

from pathlib import Path


def build_epub(path: Path, chapters: list[tuple[str, str]], title: str = "A Small Book") -> Path:
    """An EPUB with a cover-like empty page and the given (title, body) chapters, via ebooklib."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-book-1")
    book.set_title(title)
    book.set_language("en")
    cover = epub.EpubHtml(title="Cover", file_name="cover.xhtml", lang="en")
    cover.content = "<html><body><img src='cover.png' alt=''/></body></html>"
    items = []
    for number, (name, body) in enumerate(chapters, 1):
        item = epub.EpubHtml(title=name, file_name=f"chap_{number:02d}.xhtml", lang="en")
        item.content = f"<html><body><h1>{name}</h1>{body}</body></html>"
        items.append(item)
    for item in [cover, *items]:
        book.add_item(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [cover, "nav", *items]
    epub.write_epub(str(path), book)
    return path
