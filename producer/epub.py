"""EPUB books read the way a narrator reads them: body and matter told apart by the book's own semantics.

Each spine document (reading order) gets a kind, from the first source that has one:

1. a kind a listener does not want read (`SKIP_KINDS`) named by the EPUB 3 nav landmarks, the EPUB 2
   `<guide>`, or the `epub:type` of the document's body and outermost sections;
2. otherwise the document's own specific `epub:type` (dedication, preface, chapter, ...);
3. books without semantics (or only generic ones: chapter, frontmatter, backmatter; not for documents
   marked `bodymatter`): its table-of-contents title, first heading or `<title>` matched exactly
   against common names ("Contents", "Index", "Copyright", "Notes", ...).

A document the table of contents lists only in parts (each poem of a collection kept in one file, as
`#fragment` links to its sections) becomes one section per part, titled from the table of contents.

With `Matter.BODY` (the default) documents of a skipped kind, non-linear spine items, and sections of
a skipped kind nested inside spoken documents are left out and reported (`Skipped`), and the book
opens with one line "Title by Author" from its metadata. With `Matter.ALL` every document with text
is spoken, the title page included. Documents with nothing to say (covers) are never jobs.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.book_options import BookOptions, Matter, Notes, Skipped
from producer.cover import book_cover
from producer.epub_shape import epub_types, shaped_text
from producer.headings import book_intro
from producer.html import parse_html
from producer.text import has_speakable
from schemas.errors import InvalidInput

__all__ = ["SKIP_KINDS", "Book", "BookOptions", "Matter", "Notes", "Section", "Skipped", "read_book"]


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    text: str
    name: str = ""  # the spine document it comes from (`name#id` for a part of one)


@dataclass(frozen=True, slots=True)
class Book:
    """A book as it will be spoken: the opening line (None with `Matter.ALL`), sections in reading order."""

    title: str
    intro: str | None
    sections: list[Section]
    skipped: list[Skipped] = field(default_factory=list)
    author: str | None = None  # the creators, joined with ", "
    cover: bytes | None = None  # the cover image (JPEG or PNG; SVG rasterized to PNG), for the .m4b
    cover_type: str | None = None  # image/jpeg or image/png
    language: str | None = None  # the book's own (its metadata), not the voice's
    entries: list[Section | Skipped] = field(default_factory=list)  # spoken and skipped, in reading order
    warnings: list[str] = field(default_factory=list)  # about the book itself (a cover that cannot be used)


# EPUB 3 structural semantics (and EPUB 2 guide types, mapped below) a listener does not want read
SKIP_KINDS = {
    "imprint": "imprint", "copyright-page": "copyright page", "colophon": "colophon",
    "toc": "table of contents", "loi": "list of illustrations", "lot": "list of tables",
    "halftitlepage": "half-title page", "titlepage": "title page (title and author are said once at the start)",
    "index": "index", "bibliography": "bibliography", "endnotes": "notes", "footnotes": "notes",
    "rearnotes": "notes", "landmarks": "landmarks", "page-list": "page list", "cover": "cover",
}
_GUIDE = {"title-page": "titlepage", "notes": "endnotes", "text": "bodymatter"}
_GENERIC = {"chapter", "bodymatter", "frontmatter", "backmatter"}
_TITLES = {
    "contents": "toc", "table of contents": "toc", "index": "index", "copyright": "copyright-page",
    "uncopyright": "copyright-page", "colophon": "colophon", "imprint": "imprint",
    "bibliography": "bibliography", "notes": "endnotes", "endnotes": "endnotes", "footnotes": "endnotes",
    "list of illustrations": "loi", "illustrations": "loi", "list of tables": "lot",
    "title page": "titlepage", "titlepage": "titlepage", "half title": "halftitlepage",
}


def read_book(path: Path, options: BookOptions) -> Book:
    """Read the EPUB at `path` into spoken sections and what was skipped.

    Raises:
        InvalidInput: the file is not a readable EPUB.
    """
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(str(path), options={"ignore_ncx": True})
    except Exception as err:  # ebooklib raises zipfile, KeyError and its own errors for bad files
        raise InvalidInput(f"{path}: not a readable EPUB ({type(err).__name__}: {err})") from err
    title = _metadata(book, "title")[:1] or [path.stem]
    language = options.language or (_metadata(book, "language")[:1] or ["en"])[0]
    reader = _Reader(path, book, options, language)
    for idref, linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is not None and item.get_type() == ebooklib.ITEM_DOCUMENT:
            reader.add(item, linear != "no")
    intro = None
    if options.matter is Matter.BODY:
        intro = book_intro(title[0], _metadata(book, "creator"), language)
    authors = _metadata(book, "creator")
    cover = book_cover(book, str(path))
    return Book(title=title[0], intro=intro, sections=reader.sections, skipped=reader.skipped,
                author=", ".join(authors) or None, cover=cover.image, cover_type=cover.media_type,
                entries=reader.entries,
                language=next(iter(_metadata(book, "language")), None), warnings=list(cover.warnings))


def _metadata(book: Any, name: str) -> list[str]:
    return [str(value).strip() for value, _ in book.get_metadata("DC", name) if value and str(value).strip()]


class _Reader:
    """Classifies and shapes the spine documents of one book, in order."""

    def __init__(self, path: Path, book: Any, options: BookOptions, language: str) -> None:
        self.path, self.book, self.options, self.language = path, book, options, language
        self.sections: list[Section] = []
        self.skipped: list[Skipped] = []
        self.entries: list[Section | Skipped] = []  # both, in reading order (the numbers --chapters uses)
        entries = _toc_entries(book.toc)
        self.toc = _toc_titles(entries)
        self.whole = {document for document, fragment, _ in entries if not fragment}
        self.parts: dict[str, list[tuple[str, str]]] = {}  # document -> (fragment, title), in ToC order
        for document, fragment, title in entries:
            if fragment:
                self.parts.setdefault(document, []).append((fragment, title))
        self.landmarks = _landmarks(book)
        self.guide = {str(g.get("href") or "").split("#")[0]: str(g.get("type") or "").lower() for g in book.guide}
        self._pristine: dict[str, Any] = {}

    def add(self, item: Any, linear: bool) -> None:
        name = item.get_name()
        soup = parse_html(item.content)  # as written: get_content() rewrites <body>, dropping its epub:type
        title = self.toc.get(name) or _first_heading(soup)
        kind = self._kind(name, soup, title)
        body = self.options.matter is Matter.BODY
        if body and kind in SKIP_KINDS:
            self._skip(name, soup, title, SKIP_KINDS[kind])
            return
        if body and not linear:
            self._skip(name, soup, title, "outside the reading order (linear=\"no\")")
            return
        if body:
            self._drop_nested_matter(name, soup)
        for part_title, part in [(title, soup), *self._split(name, soup)]:
            text = shaped_text(part, name=name, doc_kind=kind, language=self.language,
                               read_notes=self.options.notes is Notes.AFTER, captions=self.options.captions,
                               notes=self._note)
            if has_speakable(text):
                self.sections.append(Section(part_title or f"Chapter {len(self.sections) + 1}", text, name))
                self.entries.append(self.sections[-1])

    def _split(self, name: str, soup: Any) -> list[tuple[str | None, Any]]:
        """A document the table of contents lists only in parts (poems of a collection in one file) is
        read as those parts, each its own section; what lies outside them stays in `soup`, read first."""
        if name in self.whole or len(self.parts.get(name, [])) < 2:
            return []
        targets = [(title, soup.find(id=fragment)) for fragment, title in self.parts[name]]
        found = [(title, tag) for title, tag in targets if tag is not None and tag.name in ("section", "article")]
        tags = [tag for _, tag in found]
        if len(found) < 2 or any(parent is other for tag in tags for parent in tag.parents for other in tags):
            return []  # parts inside parts: keep the document whole
        pieces: list[tuple[str | None, Any]] = []
        for title, tag in found:
            tag.extract()
            pieces.append((title, parse_html(str(tag))))
        return pieces

    def _skip(self, name: str, soup: Any, title: str | None, reason: str) -> None:
        if has_speakable(soup.get_text()):  # an empty page (a cover image) is not worth a line
            self.skipped.append(Skipped(str(self.path), name, title, reason))
            self.entries.append(self.skipped[-1])

    def _kind(self, name: str, soup: Any, title: str | None) -> str | None:
        guide = self.guide.get(name, "")
        tokens = [*self.landmarks.get(name, []), _GUIDE.get(guide, guide), *_document_types(soup)]
        for token in tokens:
            if token in SKIP_KINDS:
                return token
        specific = [t for t in tokens if t and ":" not in t and t not in _GENERIC]
        if specific:
            return specific[0]
        if "bodymatter" in tokens:  # a chapter the book places in its body is a chapter, whatever its title
            return "chapter"
        for candidate in (title, _first_heading(soup), soup.title.get_text() if soup.title else None):
            key = re.sub(r"[^\w\s]", "", candidate or "").strip().lower()
            if key in _TITLES:
                return _TITLES[key]
        return "chapter" if "chapter" in tokens else None

    def _drop_nested_matter(self, name: str, soup: Any) -> None:
        outer = _outer_sections(soup)
        for tag in soup.find_all(["section", "article", "nav", "aside", "div"]):
            kinds = [t for t in epub_types(tag) if t in SKIP_KINDS]
            if kinds and all(tag is not o for o in outer) and tag.parent is not None:
                where = f"{name}#{tag.get('id')}" if tag.get("id") else name
                self._skip(where, tag, _first_heading(tag), SKIP_KINDS[kinds[0]])
                tag.decompose()

    def _note(self, name: str, element_id: str) -> Any:
        if name not in self._pristine:
            item = self.book.get_item_with_href(name)
            self._pristine[name] = parse_html(item.content) if item is not None else None
        soup = self._pristine[name]
        return soup.find(id=element_id) if soup is not None else None


def _outer_sections(soup: Any) -> list[Any]:
    """The body and its outermost sectioning elements that carry an `epub:type`."""
    outer = [soup.body] if soup.body is not None else []
    for tag in soup.find_all(["section", "article", "nav"]):
        if epub_types(tag) and not any(epub_types(p) for p in tag.find_parents(["section", "article", "nav"])):
            outer.append(tag)
    return outer


def _document_types(soup: Any) -> list[str]:
    return [token for tag in _outer_sections(soup) for token in epub_types(tag)]


def _landmarks(book: Any) -> dict[str, list[str]]:
    """Document name -> its `epub:type` tokens in the EPUB 3 navigation document's landmarks."""
    from ebooklib import epub

    found: dict[str, list[str]] = {}
    for nav in (item for item in book.get_items() if isinstance(item, epub.EpubNav)):
        soup = parse_html(nav.content)
        base = posixpath.dirname(nav.get_name())
        for landmarks in soup.find_all(lambda t: t.name == "nav" and "landmarks" in epub_types(t)):
            for link in landmarks.find_all("a", href=True):
                target = posixpath.normpath(posixpath.join(base, str(link["href"]).split("#")[0]))
                found.setdefault(target, []).extend(epub_types(link))
    return found


def _toc_entries(toc: Any) -> list[tuple[str, str, str]]:
    """(document, #fragment or "", title) of every table-of-contents entry, in order."""
    found: list[tuple[str, str, str]] = []
    for entry in toc:
        node, children = (entry[0], entry[1]) if isinstance(entry, tuple | list) else (entry, [])
        href, title = getattr(node, "href", None), getattr(node, "title", None)
        if href and title:
            document, _, fragment = str(href).partition("#")
            found.append((document, fragment, " ".join(str(title).split())))
        found += _toc_entries(children)
    return found


def _toc_titles(entries: list[tuple[str, str, str]]) -> dict[str, str]:
    """Document -> its title: the first entry for the whole document, else the first for a part of it."""
    titles: dict[str, str] = {}
    for document, _fragment, title in sorted(entries, key=lambda e: bool(e[1])):  # whole documents first
        titles.setdefault(document, title)
    return titles


def _first_heading(soup: Any) -> str | None:
    heading = soup.find(["h1", "h2", "h3"])
    text = " ".join(heading.get_text(" ", strip=True).split()) if heading else ""
    return text or None
