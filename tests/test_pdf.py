"""PDF input: a text-layer PDF made here with reportlab comes out as clean paragraphs; a scan is refused."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from producer.chunks import HEADING_END
from producer.inputs import read_inputs
from schemas.errors import InvalidInput
from schemas.messages import JobRequest
from schemas.status import AudioFormat

pytest.importorskip("reportlab")

PARAGRAPHS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of "
    "Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair.",
    "There were a king with a large jaw and a queen with a plain face, on the throne of England; there "
    "were a king with a large jaw and a queen with a fair face, on the throne of France. In both "
    "countries it was clearer than crystal to the lords of the State preserves of loaves and fishes, "
    "that things in general were settled for ever.",
    "France, less favoured on the whole as to matters spiritual than her sister of the shield and "
    "trident, rolled with exceeding smoothness down hill, making paper money and spending it.",
]
HEADER = "A Tale of Two Cities"
WIDTH = 62  # characters per line: long words get cut with a hyphen at line ends


def _letters(word: str) -> int:
    return len(word) - len(word.lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _hyphenated(paragraph: str) -> list[str]:
    """Lines of at most WIDTH characters; a word that does not fit is cut with a hyphen, as typesetters do."""
    lines: list[str] = []
    line = ""
    for word in paragraph.split():
        room = WIDTH - len(line) - (1 if line else 0)
        if len(word) <= room:
            line = f"{line} {word}" if line else word
        elif room >= 3 and _letters(word) >= 6:
            cut = min(room - 1, _letters(word) - 2)
            lines.append(f"{line} {word[:cut]}-".strip())
            line = word[cut:]
        else:
            lines.append(line)
            line = word
    return [*lines, line]


def _make_pdf(path: Path, *, lines_per_page: int = 6) -> list[str]:
    """A book-like PDF: running header, centred page number footer, indented paragraphs, a title."""
    from reportlab.lib.pagesizes import A5
    from reportlab.pdfgen import canvas

    width, height = A5
    pdf = canvas.Canvas(str(path), pagesize=A5)
    pdf.setTitle("Two Cities")
    body = [("title", "I. The Period")] + [
        ("indent" if i == 0 else "line", text) for p in PARAGRAPHS for i, text in enumerate(_hyphenated(p))]
    all_lines: list[str] = []
    for page_number, start in enumerate(range(0, len(body), lines_per_page), 1):
        pdf.setFont("Times-Italic", 9)
        pdf.drawCentredString(width / 2, height - 30, HEADER)
        pdf.drawCentredString(width / 2, 25, str(page_number))
        y = height - 80
        for kind, text in body[start:start + lines_per_page]:
            pdf.setFont("Times-Bold" if kind == "title" else "Times-Roman", 18 if kind == "title" else 9.5)
            pdf.drawString(40 + (14 if kind == "indent" else 0), y, text)
            y -= 28 if kind == "title" else 13
            all_lines.append(text)
        pdf.showPage()
    pdf.save()
    return all_lines


def _read(path: Path) -> list[JobRequest]:
    return read_inputs([str(path)], io.StringIO(), voice=None, format=AudioFormat.WAV, priority=5)


def test_pdf_comes_out_without_running_heads_page_numbers_or_line_end_hyphens(tmp_path: Path) -> None:
    lines = _make_pdf(tmp_path / "cities.pdf")
    assert sum(line.endswith("-") for line in lines) >= 2, "the test PDF must hyphenate some line ends"
    [request] = _read(tmp_path / "cities.pdf")
    assert request.title == "Two Cities"
    assert request.text == "\n\n".join([f"Chapter One. The Period{HEADING_END}", *PARAGRAPHS])


def test_pdf_without_text_layer_is_refused_in_one_line(tmp_path: Path) -> None:
    from reportlab.lib.pagesizes import A5
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(tmp_path / "scan.pdf"), pagesize=A5)
    pdf.rect(40, 40, 300, 500, fill=1)  # a "scanned page": ink, no text
    pdf.showPage()
    pdf.save()
    with pytest.raises(InvalidInput, match=r"scan\.pdf: no text layer .*run OCR") as caught:
        _read(tmp_path / "scan.pdf")
    assert "\n" not in str(caught.value)


def test_damaged_pdf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4\n" + textwrap.dedent("garbage").encode())
    with pytest.raises(InvalidInput, match=r"bad\.pdf: not a readable PDF"):
        _read(tmp_path / "bad.pdf")
