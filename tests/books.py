"""EPUB books built in tests with ebooklib."""

from __future__ import annotations

from pathlib import Path


def build_epub(path: Path, chapters: list[tuple[str, str]], title: str = "A Small Book", *,
               author: str | None = None, cover_png: bytes | None = None, cover_svg: bytes | None = None,
               cover_item: tuple[str, str, bytes] | None = None) -> Path:
    """An EPUB with a cover-like empty page and the given (title, body) chapters, via ebooklib; with
    `cover_png` (or `cover_svg`), a real cover image (ebooklib's `set_cover`: EPUB 3 cover-image and EPUB 2
    meta); `cover_item` (file name, media type, bytes): any item named as the cover by the EPUB 2 meta only."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-book-1")
    book.set_title(title)
    book.set_language("en")
    if author:
        book.add_author(author)
    if cover_png:
        book.set_cover("cover-image.png", cover_png, create_page=False)
    if cover_svg:
        book.set_cover("cover.svg", cover_svg, create_page=False)
    if cover_item:
        name, media_type, data = cover_item
        book.add_item(epub.EpubItem(uid="cover-item", file_name=name, media_type=media_type, content=data))
        book.add_metadata(None, "meta", "", {"name": "cover", "content": "cover-item"})
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


SE_DATA = Path(__file__).resolve().parent / "data" / "standardebooks"


def build_source_epub(path: Path, folder: str, spine: list[str], *, title: str, authors: list[str],
                      toc: dict[str, str], landmarks: dict[str, str], language: str = "en-US",
                      made: dict[str, bytes] | None = None, cover_svg: bytes | None = None) -> Path:
    """An EPUB 3 laid out as Standard Ebooks builds theirs, from the XHTML files kept in tests/data.

    `spine` names files of `SE_DATA/folder` (or of `made`: documents a test put together) in reading
    order, stored under `text/` byte for byte; `cover_svg`, the EPUB 3 `cover-image` (Standard Ebooks' covers are
    SVG); `toc` maps a file (or `file#id`) to its
    table-of-contents title and `landmarks` a file to its landmark `epub:type`, both written into a
    navigation document `toc.xhtml` beside the package document.
    """
    import zipfile
    from xml.sax.saxutils import escape

    manifest = "".join(f'<item id="{name}" href="text/{name}" media-type="application/xhtml+xml"/>' for name in spine)
    if cover_svg is not None:
        manifest += '<item id="cover.svg" href="images/cover.svg" media-type="image/svg+xml" properties="cover-image"/>'
    creators = "".join(f"<dc:creator>{escape(a)}</dc:creator>" for a in authors)
    opf = (f'<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
           f'unique-identifier="uid"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
           f'<dc:identifier id="uid">test-{folder}</dc:identifier><dc:title>{escape(title)}</dc:title>{creators}'
           f'<dc:language>{language}</dc:language></metadata><manifest>{manifest}'
           f'<item id="toc.xhtml" href="toc.xhtml" media-type="application/xhtml+xml" properties="nav"/></manifest>'
           f'<spine>{"".join(f"<itemref idref={chr(34)}{n}{chr(34)}/>" for n in spine)}</spine></package>')
    toc_items = "".join(f'<li><a href="text/{n}">{escape(t)}</a></li>' for n, t in toc.items())
    marks = "".join(f'<li><a href="text/{n}" epub:type="{k}">{escape(n)}</a></li>' for n, k in landmarks.items())
    nav = ('<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
           'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Table of Contents</title></head>'
           f'<body epub:type="frontmatter"><nav id="toc" epub:type="toc"><h2>Table of Contents</h2><ol>{toc_items}'
           f'</ol></nav><nav id="landmarks" epub:type="landmarks"><ol>{marks}</ol></nav></body></html>')
    container = ('<?xml version="1.0"?>'
                 '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                 '<rootfiles><rootfile full-path="epub/content.opf" media-type="application/oebps-package+xml"/>'
                 '</rootfiles></container>')
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml", container)
        archive.writestr("epub/content.opf", opf)
        archive.writestr("epub/toc.xhtml", nav)
        if cover_svg is not None:
            archive.writestr("epub/images/cover.svg", cover_svg)
        for name in spine:
            data = (made or {}).get(name) or (SE_DATA / folder / name).read_bytes()
            archive.writestr(f"epub/text/{name}", data)
    return path
