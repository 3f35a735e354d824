"""Books read the way a narrator reads them, on EPUBs built from real Standard Ebooks sources (tests/data).

A novel with a note (Northanger Abbey), a poetry collection (North of Boston) and non-fiction with an
index (Hume's Enquiry): the spoken jobs and their order, no body text lost, skipped matter reported,
headings, verse lines, notes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from producer.book_options import BookOptions, Matter, Notes, Skipped
from producer.chunks import HEADING_END, LINE_BREAK
from producer.headings import spoken_heading
from producer.html import parse_html
from producer.inputs import read_inputs
from producer.text import normalize, split_chunks
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings
from schemas.status import AudioFormat, BreakKind
from tests.books import SE_DATA, build_epub, build_source_epub

NOVEL = ("northanger-abbey", ["titlepage.xhtml", "imprint.xhtml", "preface.xhtml", "chapter-3.xhtml", "endnotes.xhtml"],
         {"title": "Northanger Abbey", "authors": ["Jane Austen"], "language": "en-GB",
          "toc": {"titlepage.xhtml": "Titlepage", "imprint.xhtml": "Imprint", "preface.xhtml": "Advertisement",
                  "chapter-3.xhtml": "III", "endnotes.xhtml": "Endnotes"},
          "landmarks": {"chapter-3.xhtml": "bodymatter z3998:fiction", "endnotes.xhtml": "backmatter endnotes"}})
POEMS = ("north-of-boston", ["dedication.xhtml", "epigraph.xhtml", "mending-wall.xhtml", "colophon.xhtml"],
         {"title": "North of Boston", "authors": ["Robert Frost"],
          "toc": {"dedication.xhtml": "Dedication", "epigraph.xhtml": "The Pasture",
                  "mending-wall.xhtml": "Mending Wall", "colophon.xhtml": "Colophon"},
          "landmarks": {"mending-wall.xhtml": "bodymatter z3998:fiction"}})
ESSAY = ("enquiry-human-understanding", ["chapter-9.xhtml", "index.xhtml"],
         {"title": "An Enquiry Concerning Human Understanding", "authors": ["David Hume"], "language": "en-GB",
          "toc": {"chapter-9.xhtml": "IX: Of the Reason of Animals", "index.xhtml": "XIV"},
          "landmarks": {"chapter-9.xhtml": "bodymatter"}})


def _book(tmp_path: Path, spec: tuple[str, list[str], dict[str, object]]) -> Path:
    folder, spine, meta = spec
    return build_source_epub(tmp_path / f"{folder}.epub", folder, spine, **meta)  # type: ignore[arg-type]


def _read(path: Path, **options: object) -> tuple[list[JobRequest], list[Skipped]]:
    skipped: list[Skipped] = []
    requests = read_inputs([str(path)], io.StringIO(), voice=None, format=AudioFormat.WAV, priority=5,
                           book=BookOptions(**options), on_skip=skipped.append)  # type: ignore[arg-type]
    return requests, skipped


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def _assert_body_kept(folder: str, name: str, job_text: str) -> None:
    """Every paragraph of the source's body (note markers aside) is in the job, in order, letter for letter."""
    soup = parse_html((SE_DATA / folder / name).read_bytes())
    for ref in soup.find_all(attrs={"epub:type": "noteref"}):
        ref.decompose()
    spoken = _letters(job_text)
    position = 0
    paragraphs = [p for p in soup.find_all("p") if p.find_parent(["header", "hgroup"]) is None]
    assert paragraphs
    for paragraph in paragraphs:
        letters = _letters(paragraph.get_text())
        found = spoken.find(letters, position)
        assert found >= 0, f"{name}: lost or out of order: {paragraph.get_text()[:80]!r}"
        position = found + len(letters)


def test_novel_speaks_title_preface_and_chapter_and_reports_the_rest(tmp_path: Path) -> None:
    requests, skipped = _read(_book(tmp_path, NOVEL))
    assert [r.title for r in requests] == ["Northanger Abbey", "Advertisement", "III"]
    assert [r.group_index for r in requests] == [0, 1, 2]
    assert {r.group_title for r in requests} == {"Northanger Abbey"}
    assert requests[0].text == "Northanger Abbey by Jane Austen."
    assert requests[1].text.startswith(f"Advertisement{HEADING_END}\n\nBy the Authoress of Northanger Abbey\n\n")
    assert requests[2].text.startswith(f"Chapter Three{HEADING_END}\n\nEvery morning now brought")
    _assert_body_kept("northanger-abbey", "preface.xhtml", requests[1].text)
    _assert_body_kept("northanger-abbey", "chapter-3.xhtml", requests[2].text)
    assert "love is declared, it must be very improper" in requests[2].text  # the note marker "1" is not read
    assert "Richardson" not in requests[2].text
    assert [(s.section, s.reason.split(" (")[0]) for s in skipped] == [
        ("text/titlepage.xhtml", "title page"), ("text/imprint.xhtml", "imprint"), ("text/endnotes.xhtml", "notes")]
    assert str(skipped[1]) == (f"{tmp_path / 'northanger-abbey.epub'}: skipped text/imprint.xhtml \"Imprint\": "
                               "imprint (--matter all reads it)")


def test_notes_can_be_read_after_their_paragraph(tmp_path: Path) -> None:
    requests, _ = _read(_book(tmp_path, NOVEL), notes=Notes.AFTER)
    chapter = requests[2].text
    paragraph_end = chapter.index("respectable family in Gloucestershire.")
    note = chapter.index("Note: Vide a letter from Mr. Richardson, No. 97, Vol. ii, Rambler.")
    assert note > paragraph_end and chapter.endswith("Rambler.")  # after its paragraph; the backlink is gone
    assert "love is declared, it must" in chapter


def test_matter_all_reads_every_document_and_skips_nothing(tmp_path: Path) -> None:
    requests, skipped = _read(_book(tmp_path, NOVEL), matter=Matter.ALL)
    assert [r.title for r in requests] == ["Titlepage", "Imprint", "Advertisement", "III", "Endnotes"]
    assert skipped == []
    assert "Standard Ebooks is a volunteer-driven project" in requests[1].text
    _assert_body_kept("northanger-abbey", "imprint.xhtml", requests[1].text)


def test_poems_keep_every_line_in_order_with_short_pauses(tmp_path: Path) -> None:
    requests, skipped = _read(_book(tmp_path, POEMS))
    assert [r.title for r in requests] == ["North of Boston", "Dedication", "The Pasture", "Mending Wall"]
    assert requests[0].text == "North of Boston by Robert Frost."
    assert requests[1].text == f"To{LINE_BREAK}E. M. F.{LINE_BREAK}This book of people"
    assert [s.reason.split(" (")[0] for s in skipped] == ["colophon"]
    for request, name in [(requests[2], "epigraph.xhtml"), (requests[3], "mending-wall.xhtml")]:
        source = parse_html((SE_DATA / "north-of-boston" / name).read_bytes())
        expected = [source.find("h2").get_text()] + [span.get_text() for span in source.find_all("span")]
        chunks = split_chunks(normalize(request.text).text, 400)
        lines, current = [], []
        for chunk in chunks:
            current.append(chunk.text.strip())
            if chunk.break_after != BreakKind.SENTENCE:
                lines.append(" ".join(current))
                current = []
        assert lines + ([" ".join(current)] if current else []) == expected
        assert chunks[0].break_after == BreakKind.HEADING
        assert sum(c.break_after == BreakKind.LINE for c in chunks) == len(source.find_all("br"))


def test_poems_kept_in_one_file_become_one_job_each(tmp_path: Path) -> None:
    # Standard Ebooks keeps a collection's poems in one file, listed in the ToC as file#poem.
    articles = [str(parse_html((SE_DATA / "north-of-boston" / name).read_bytes()).find("article"))
                for name in ("epigraph.xhtml", "mending-wall.xhtml")]
    collection = ('<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
                  'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>North of Boston</title></head><body>'
                  f'<section id="north-of-boston" epub:type="bodymatter z3998:fiction">{"".join(articles)}'
                  '</section></body></html>')
    path = build_source_epub(tmp_path / "poems.epub", "north-of-boston", ["dedication.xhtml", "poems.xhtml"],
                             title="North of Boston", authors=["Robert Frost"],
                             made={"poems.xhtml": collection.encode()},
                             toc={"dedication.xhtml": "Dedication", "poems.xhtml#the-pasture": "The Pasture",
                                  "poems.xhtml#mending-wall": "Mending Wall"}, landmarks={})
    requests, _ = _read(path)
    assert [r.title for r in requests] == ["North of Boston", "Dedication", "The Pasture", "Mending Wall"]
    assert requests[2].text.startswith(f"The Pasture{HEADING_END}\n\nI’m going out to clean the pasture spring;")
    assert requests[3].text.startswith(f"Mending Wall{HEADING_END}\n\nSomething there is")
    assert requests[3].text.endswith("He says again, “Good fences make good neighbours.”")
    _assert_body_kept("north-of-boston", "epigraph.xhtml", requests[2].text)
    _assert_body_kept("north-of-boston", "mending-wall.xhtml", requests[3].text)


def test_nonfiction_heading_in_words_index_skipped_by_its_heading(tmp_path: Path) -> None:
    requests, skipped = _read(_book(tmp_path, ESSAY))
    assert [r.title for r in requests] == ["An Enquiry Concerning Human Understanding", "IX: Of the Reason of Animals"]
    assert requests[1].text.startswith(f"Chapter Nine. Of the Reason of Animals{HEADING_END}\n\nAll our reasonings")
    _assert_body_kept("enquiry-human-understanding", "chapter-9.xhtml", requests[1].text)
    assert "which fall under our notice and observation." in requests[1].text  # marker "19" not read
    # The index is marked up as a "chapter" in back matter; its heading "INDEX." gives it away.
    assert [(s.section, s.reason) for s in skipped] == [("text/index.xhtml", "index")]


def test_book_without_semantics_falls_back_to_titles(tmp_path: Path) -> None:
    path = build_epub(tmp_path / "plain.epub", [
        ("Copyright", "<p>Copyright 1999 by Nobody. All rights reserved.</p>"),
        ("I", "<p>It began, as these things do, with a letter.</p>"),
        ("2", "<p>The letter was answered.</p>"),
        ("Index", "<p>Letter, 1, 2.</p>")])
    requests, skipped = _read(path)
    assert [r.title for r in requests] == ["A Small Book", "I", "2"]
    assert requests[1].text == f"Chapter One{HEADING_END}\n\nIt began, as these things do, with a letter."
    assert requests[2].text.startswith(f"Chapter Two{HEADING_END}")
    assert [s.reason for s in skipped] == ["table of contents", "copyright page", "index"]
    requests, skipped = _read(path, matter=Matter.ALL)  # everything, the book's table of contents too
    assert [r.title for r in requests] == ["A Small Book", "Copyright", "I", "2", "Index"] and skipped == []
    assert requests[0].text.startswith(f"A Small Book{HEADING_END}\n\nCopyright\n\nI\n\n2\n\nIndex")


def test_footnotes_without_semantics_are_recognised(tmp_path: Path) -> None:
    body = ('<p>He spoke<a id="FNanchor_1" href="#Footnote_1" class="fnanchor">[1]</a> at last, and twice'
            '<sup><a href="#n2">2</a></sup>.</p><div class="footnote"><p><a id="Footnote_1" href="#FNanchor_1" '
            'class="label">[1]</a> A famous speech.</p></div><p id="n2">2. Said again.</p>')
    path = build_epub(tmp_path / "gutenberg.epub", [("Speech", body)])
    requests, _ = _read(path)
    assert requests[1].text == f"Speech{HEADING_END}\n\nHe spoke at last, and twice.\n\n2. Said again."
    requests, _ = _read(path, notes=Notes.AFTER)
    assert requests[1].text == (f"Speech{HEADING_END}\n\nHe spoke at last, and twice.\n\nNote: A famous speech."
                                "\n\nNote: Said again.\n\n2. Said again.")


def test_captions_are_skipped_unless_asked_for(tmp_path: Path) -> None:
    figure = ('<p>Before the picture.</p><figure><img src="a.png" alt="A sketch of a ship."/>'
              "<figcaption>The ship, as drawn by the captain.</figcaption></figure>"
              '<p>After it.</p><img src="b.png" alt="A map."/>')
    path = build_epub(tmp_path / "pictures.epub", [("Ships", figure)])
    requests, _ = _read(path)
    assert requests[1].text == f"Ships{HEADING_END}\n\nBefore the picture.\n\nAfter it."
    requests, _ = _read(path, captions=True)
    assert requests[1].text == (f"Ships{HEADING_END}\n\nBefore the picture.\n\nThe ship, as drawn by the captain."
                                "\n\nAfter it.\n\nA map.")


def test_book_with_only_matter_is_refused_saying_why(tmp_path: Path) -> None:
    from schemas.errors import InvalidInput

    path = build_epub(tmp_path / "front.epub", [("Copyright", "<p>All rights reserved.</p>")])
    with pytest.raises(InvalidInput, match=r"front\.epub: nothing to speak .*--matter all reads them"):
        _read(path)


@pytest.mark.parametrize(("heading", "kind", "language", "spoken"), [
    ("III", "chapter", "en", "Chapter Three"),
    ("Chapter 12", None, "en", "Chapter Twelve"),
    ("CHAPTER XXI.", None, "en_US", "Chapter Twenty-one"),
    ("IV. The Storm", "chapter", "en", "Chapter Four. The Storm"),
    ("Part II", "chapter", "en", "Part Two"),
    ("II", "part", "en", "Part Two"),
    ("7", None, "en", "Seven"),
    ("3", "chapter", "de", "Kapitel Drei"),
    ("II", "part", "fr", "Partie Deux"),
    ("I Am Legend", "chapter", "en", "I Am Legend"),
    ("Mix", "chapter", "en", "Mix"),
    ("III", "chapter", "xx", "III"),
])
def test_chapter_numbers_are_spoken_as_words(heading: str, kind: str | None, language: str, spoken: str) -> None:
    assert spoken_heading(heading, kind, language) == spoken


def test_headings_follow_the_voice_language(tmp_path: Path) -> None:
    path = _book(tmp_path, NOVEL)
    requests = read_inputs([str(path)], io.StringIO(), voice=None, format=AudioFormat.WAV, priority=5,
                           book=BookOptions(language="de"))
    assert requests[0].text == "Northanger Abbey von Jane Austen."
    assert requests[2].text.startswith(f"Kapitel Drei{HEADING_END}")


def test_submit_reports_skipped_matter_on_stderr_and_prints_only_json(tmp_path: Path, redis_url: str) -> None:
    import json
    import subprocess
    import sys

    path = _book(tmp_path, NOVEL)
    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "TTSFLEET_BROKER_URL": redis_url}
    result = subprocess.run([str(Path(sys.executable).parent / "ttsfleet"), "submit", str(path), "--json"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    assert [job["chunks_total"] > 0 for job in json.loads(result.stdout)] == [True, True, True]
    assert [line for line in result.stderr.splitlines() if ": skipped " in line] == [
        f"{path}: skipped text/titlepage.xhtml \"Titlepage\": title page (title and author are said once at the "
        "start) (--matter all reads it)",
        f"{path}: skipped text/imprint.xhtml \"Imprint\": imprint (--matter all reads it)",
        f"{path}: skipped text/endnotes.xhtml \"Endnotes\": notes (--matter all reads it)"]


def test_heading_and_line_pauses_are_stored_in_both_databases(tmp_path: Path, db_url: str) -> None:
    from sqlalchemy import select

    from producer.submit import submit
    from schemas.db import open_store
    from schemas.tables import Chunk

    requests, _ = _read(_book(tmp_path, POEMS))
    store = open_store(db_url)
    settings = ProducerSettings.from_env({"TTSFLEET_DATABASE_URL": db_url})
    try:
        results = submit(requests, settings, store, publisher=None)
        with store.session() as session:
            kinds = set(session.scalars(select(Chunk.break_after).where(Chunk.job_id == results[2].id)))
    finally:
        store.dispose()
    assert {BreakKind.HEADING, BreakKind.LINE, BreakKind.PARAGRAPH} <= kinds
