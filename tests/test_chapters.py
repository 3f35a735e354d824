"""A book's chapters as a person picks them (numbers in reading order, skipped parts included; ranges and
title matches; one-line refusals), and its cover as an .m4b carries it (SVG drawn, with the book's images
beside it; anything unusable a warning, never silence). Real Standard Ebooks documents from tests/data."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from producer.book_options import BookOptions, Matter
from producer.book_read import read_epub_book, read_pdf_book
from producer.chapters import Chapter, select_chapters
from producer.cover import rasterize_svg
from schemas.errors import InvalidInput
from tests.books import build_epub, build_source_epub

NORTHANGER = {
    "title": "Northanger Abbey", "authors": ["Jane Austen"], "language": "en-GB",
    "toc": {"titlepage.xhtml": "Titlepage", "imprint.xhtml": "Imprint", "preface.xhtml": "Advertisement",
         "chapter-3.xhtml": "III", "endnotes.xhtml": "Endnotes"},
    "landmarks": {"chapter-3.xhtml": "bodymatter z3998:fiction", "endnotes.xhtml": "backmatter endnotes"}}
SPINE = ["titlepage.xhtml", "imprint.xhtml", "preface.xhtml", "chapter-3.xhtml", "endnotes.xhtml"]
BOOK = [Chapter(1, "Imprint", 0, "imprint"), Chapter(2, "Letter One", 900), Chapter(3, "Letter Two", 800),
        Chapter(4, "The Storm", 1200), Chapter(5, "Letters Home", 700), Chapter(6, "Colophon", 0, "colophon")]


def _northanger(tmp_path: Path) -> Path:
    return build_source_epub(tmp_path / "northanger.epub", "northanger-abbey", SPINE, **NORTHANGER)  # type: ignore[arg-type]


def test_a_standard_ebooks_book_lists_every_part_and_why_some_are_skipped(tmp_path: Path) -> None:
    parts, read, skipped = read_epub_book(_northanger(tmp_path), BookOptions())
    listed = [(c.index, c.title, c.skipped is None) for c in read.chapters]
    assert listed == [(1, "Titlepage", False), (2, "Imprint", False), (3, "Advertisement", True),
                      (4, "III", True), (5, "Endnotes", False)]
    assert read.chapters[1].skipped == "imprint" and read.chapters[1].chars == 0
    assert read.selected == (3, 4) and len(skipped) == 3 and len(read.sha256) == 64
    assert [(p.title, p.group_index, p.chapter) for p in parts] == [
        ("Northanger Abbey", 0, 0), ("Advertisement", 1, 3), ("III", 2, 4)]
    assert read.language == "en-GB" and read.author == "Jane Austen"


def test_a_selection_keeps_numbers_and_file_order_and_refuses_skipped_parts(tmp_path: Path) -> None:
    path = _northanger(tmp_path)
    parts, read, _ = read_epub_book(path, BookOptions(chapters="III"))
    assert [(p.title, p.group_index, p.chapter) for p in parts] == [("Northanger Abbey", 0, 0), ("III", 2, 4)]
    assert read.selected == (4,)
    with pytest.raises(InvalidInput, match=r'chapter 2 "Imprint" is skipped \(imprint\); --matter all reads it'):
        read_epub_book(path, BookOptions(chapters="2"))
    everything, read_all, _ = read_epub_book(path, BookOptions(matter=Matter.ALL, chapters="2"))
    assert [p.title for p in everything] == ["Imprint"] and read_all.selected == (2,)


@pytest.mark.parametrize(("spec", "picked"), [("2", (2,)), ("1-3", (2, 3)), (" 4 , 2-3 ", (2, 3, 4)),
                                              ("4-", (4, 5)), ("letter", (2, 3, 5)), ("storm,2", (2, 4)),
                                              ("2,2,2-3", (2, 3))])
def test_selections(spec: str, picked: tuple[int, ...]) -> None:
    assert select_chapters(spec, BOOK, "b.epub") == picked


@pytest.mark.parametrize(("spec", "says"), [
    ("", "is empty"), ("9", "chapters 9 are not in the book: it has chapters 1-6"),
    ("5-3", "chapters 5-3 run backwards; write 3-5"), ("0", "not in the book"),
    ("1", 'chapter 1 "Imprint" is skipped (imprint)'), ("6-6", "skipped"),
    ("dragon", 'no chapter title contains "dragon"'), ("colophon", "only skipped ones: 6 \"Colophon\"")])
def test_bad_selections_are_one_line(spec: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        select_chapters(spec, BOOK, "b.epub")
    assert says in str(caught.value) and "\n" not in str(caught.value) and str(caught.value).startswith("b.epub: ")


def _png(color: tuple[int, int, int], size: tuple[int, int] = (40, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def test_an_svg_cover_is_drawn_with_the_picture_it_refers_to() -> None:
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" '
           b'height="60"><image xlink:href="cover.png" width="40" height="60"/></svg>')
    png = rasterize_svg(svg, "images/cover.svg", {"images/cover.png": _png((200, 30, 30))}, height_px=300)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (200, 300) and image.getpixel((100, 150)) == (200, 30, 30)
    with pytest.raises(ValueError):
        rasterize_svg(b"<svg this is not", "cover.svg")


@pytest.mark.parametrize(("name", "media", "data", "says"), [
    ("cover.gif", "image/gif", b"GIF89a....", "is image/gif, which an .m4b cannot carry"),
    ("cover.svg", "image/svg+xml", b"<svg broken", "could not be drawn"),
    ("cover.png", "image/png", b"", "is empty")])
def test_a_cover_that_cannot_be_used_is_a_warning(tmp_path: Path, name: str, media: str, data: bytes,
                                                 says: str) -> None:
    path = build_epub(tmp_path / "b.epub", [("One", "<p>Some words to say.</p>")], title="Covered",
                      cover_item=(name, media, data))
    _parts, read, _ = read_epub_book(path, BookOptions())
    assert read.cover is None and len(read.warnings) == 1 and says in read.warnings[0]
    assert read.warnings[0].startswith(str(path)) and "the .m4b has no cover" in read.warnings[0]


def test_a_pdf_is_a_book_of_one_chapter(tmp_path: Path) -> None:
    from reportlab.lib.pagesizes import A5
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(tmp_path / "notes.pdf"), pagesize=A5)
    pdf.setTitle("Field Notes")
    pdf.drawString(72, 500, "A short printed page with a sentence to read.")
    pdf.save()
    text, read = read_pdf_book(tmp_path / "notes.pdf", "en")
    assert "printed page" in text and read.title == "Field Notes" and read.cover is None
    assert [(c.index, c.title, c.skipped) for c in read.chapters] == [(1, "Field Notes", None)]
    assert read.selected == (1,)
    from producer.inputs import read_inputs
    from schemas.status import AudioFormat

    with pytest.raises(InvalidInput, match="chapters 2 are not in the book: it has chapters 1-1"):
        read_inputs([str(tmp_path / "notes.pdf")], io.StringIO(), voice=None, format=AudioFormat.WAV, priority=5,
                    book=BookOptions(chapters="2"))
