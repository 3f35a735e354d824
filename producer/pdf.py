"""PDF input: the text layer of a PDF, read as a listener wants it (pdfplumber, on pdfminer.six).

What is dropped, and how it is recognised (page by page, from the text's position):

- running headers and footers: the first or last line of a page, inside the top or bottom 12% of the
  page, whose text (digits ignored) comes back on at least two pages and a third of all pages;
- page numbers: a first or last line in those margins that is only a number ("7", "- 7 -", "vii",
  "Page 7", "7 of 12");
- end-of-line hyphenation: a line that ends in a hyphen after a letter, followed by a line starting with
  a lower-case letter, is joined without the hyphen ("conti-" + "nues" -> "continues").

Lines are joined into paragraphs; a new one starts after a vertical gap larger than 1.4 times the usual
line spacing, at an indented first line, and after a short line that ends a sentence. A line in a
font clearly larger than the body's is a heading (followed by a heading pause; a chapter number in it
is said in words). A PDF without a text
layer (a scan) is refused with one line: run OCR on it first.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producer.chunks import HEADING_END
from producer.headings import spoken_heading
from producer.text import has_speakable
from schemas.errors import InvalidInput

__all__ = ["read_pdf"]

_MARGIN = 0.12  # share of the page height, at top and bottom, where running heads and folios live
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?[-–—\s]*(?:\d{1,5}|[ivxlcdm]{1,8})[-–—\s]*(?:of\s+\d{1,5})?$", re.IGNORECASE)
_HYPHENS = "-\u00ad\u2010"
_SENTENCE_END = re.compile(r"[.!?:…][\"'”’)\]]*$")


@dataclass(frozen=True, slots=True)
class _Line:
    text: str
    top: float
    bottom: float
    x0: float
    x1: float
    size: float


def read_pdf(path: Path, language: str = "en") -> tuple[str, str | None]:
    """The speakable text of the PDF at `path` and its title (document metadata), if any.

    A heading that is a chapter number is said in words in `language` ("Chapter Three").

    Raises:
        InvalidInput: the file is not a readable PDF (damaged, encrypted), or has no text layer.
    """
    try:
        import pdfplumber
    except ImportError as err:
        raise InvalidInput(f"{path}: reading PDFs needs the pdf extra: pip install 'ttsfleet[pdf]'") from err
    try:
        with pdfplumber.open(path) as pdf:
            title = str(pdf.metadata.get("Title") or "").strip() or None
            pages = [(_lines(page), float(page.height)) for page in pdf.pages]
    except Exception as err:  # pdfminer raises many types (syntax, encryption, decoding) for bad files
        raise InvalidInput(f"{path}: not a readable PDF ({type(err).__name__}: {err})") from err
    if not any(lines for lines, _ in pages):
        raise InvalidInput(f"{path}: no text layer (a scanned PDF?); run OCR on it first "
                           "(for example ocrmypdf) and submit the result")
    body = _drop_running_lines(pages)
    text = _paragraphs(body, language)
    if not has_speakable(text):
        raise InvalidInput(f"{path}: nothing to speak (only page numbers, headers and footers)")
    return text, title


def _lines(page: Any) -> list[_Line]:
    found = []
    for line in page.extract_text_lines(return_chars=True):
        text = " ".join(str(line["text"]).split())
        if text:
            size = max((float(c.get("size", 0)) for c in line["chars"]), default=0.0)
            found.append(_Line(text, float(line["top"]), float(line["bottom"]), float(line["x0"]),
                               float(line["x1"]), size))
    return found


def _key(text: str) -> str:
    return re.sub(r"\d+", "#", text.lower())


def _edges(lines: list[_Line], height: float) -> list[_Line]:
    """The first and last line of a page, where each lies in the page's top or bottom margin."""
    edges = [line for line in {id(x): x for x in lines[:1] + lines[-1:]}.values()
             if line.bottom <= height * _MARGIN or line.top >= height * (1 - _MARGIN)]
    return edges


def _drop_running_lines(pages: list[tuple[list[_Line], float]]) -> list[list[_Line]]:
    edges = [_edges(lines, height) for lines, height in pages]
    seen = Counter(key for page in edges for key in {_key(line.text) for line in page})
    needed = max(2, len(pages) / 3)
    body = []
    for (lines, _), page_edges in zip(pages, edges, strict=True):
        drop = {id(line) for line in page_edges
                if _PAGE_NUMBER.match(line.text) or seen[_key(line.text)] >= needed}
        body.append([line for line in lines if id(line) not in drop])
    return body


def _paragraphs(pages: list[list[_Line]], language: str) -> str:
    lines = [line for page in pages for line in page]
    if not lines:
        return ""
    body_size = statistics.median(line.size for line in lines)
    left = min(line.x0 for line in lines)
    width = max(line.x1 for line in lines) - left
    spacings = [b.top - a.top for page in pages for a, b in itertools.pairwise(page) if b.top > a.top]
    spacing = statistics.median(spacings) if spacings else body_size * 1.2
    out: list[str] = []
    previous: _Line | None = None
    for page in pages:
        for index, line in enumerate(page):
            heading = line.size > body_size * 1.25
            if not out:
                out.append(line.text)
            elif heading or previous is None or _starts_paragraph(previous, line, index == 0, left, width,
                                                                  spacing, body_size):
                out.append("\n\n" + line.text)
            else:
                out.append(_joined(out.pop(), line.text))
            if heading:
                out[-1] = out[-1][:-len(line.text)] + spoken_heading(line.text, "chapter", language) + HEADING_END
            previous = None if heading else line
    return "".join(out).strip()


def _starts_paragraph(previous: _Line, line: _Line, new_page: bool, left: float, width: float,
                      spacing: float, size: float) -> bool:
    indented = line.x0 - left > size
    short_end = previous.x1 - left < width * 0.8 and bool(_SENTENCE_END.search(previous.text))
    gap = not new_page and line.top - previous.top > spacing * 1.4
    return indented or short_end or gap


def _joined(text: str, line: str) -> str:
    if len(text) > 1 and text[-1] in _HYPHENS and text[-2].isalpha() and line[:1].islower():
        return text[:-1] + line
    return f"{text} {line}"
