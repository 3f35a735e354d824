"""One EPUB content document shaped for listening: headings, verse lines, notes, figures, nested matter.

`shaped_text` changes the parsed document in place and returns its speakable text:

- headings (`h1`-`h6`, `hgroup`) become one paragraph ended by `HEADING_END` (a heading pause); a
  chapter number is said as words ("Chapter Three", see `producer.headings`);
- inside verse (`z3998:poem|verse|song|hymn|lyrics`, or class `poem|verse|stanza|poetry|lyrics`) and
  shaped text (dedication, epigraph) each `<br>` becomes `LINE_BREAK` (a short pause); a stanza is a
  paragraph; elsewhere a `<br>` is a space;
- note references (`epub:type="noteref"`, `role="doc-noteref"`, a short link in or around `<sup>`, or
  of class `fnanchor`/`noteref`) are never read mid-sentence; with `read_notes` each referenced note is
  read after its paragraph ("Note: ..."); notes placed in the text (`<aside epub:type="footnote">`,
  blocks of class `footnote(s)`/`endnote(s)`) and backlinks are removed from the flow;
- figure captions are removed unless `captions`, which also reads the alt text of uncaptioned images.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

from producer.chunks import HEADING_END, LINE_BREAK
from producer.headings import LABEL_KINDS, note_label, spoken_heading
from producer.html import parse_html, soup_text

__all__ = ["NoteLookup", "epub_types", "shaped_text"]

NoteLookup = Callable[[str, str], Any]  # (document name, element id) -> the note element, or None
_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_SECTIONING = ["section", "article", "nav", "aside", "div", "body"]
_NOTE_TYPES = {"footnote", "endnote", "rearnote", "note", "footnotes", "endnotes", "rearnotes"}
_VERSE_TYPES = {"z3998:poem", "z3998:verse", "z3998:song", "z3998:hymn", "z3998:lyrics"}
_VERSE_CLASSES = {"poem", "verse", "stanza", "poetry", "lyrics"}
_SHAPED_TYPES = {"dedication", "epigraph"}  # set line by line like verse
_NOTE_CLASSES = {"fnanchor", "noteref", "footnote-ref", "footnoteref", "endnote-ref"}
_NOTE_BLOCKS = {"footnote", "footnotes", "endnote", "endnotes"}
_PARAGRAPHS = ["p", "li", "dd", "dt", "blockquote", "td", "th", "figcaption", "h1", "h2", "h3", "h4", "h5", "h6"]


def epub_types(tag: Any) -> list[str]:
    """The tokens of a tag's `epub:type` (EPUB 3 structural semantics), lower-cased."""
    value = tag.get("epub:type") if hasattr(tag, "get") else None
    return str(value).lower().split() if value else []


def shaped_text(soup: Any, *, name: str, doc_kind: str | None, language: str, read_notes: bool,
                captions: bool, notes: NoteLookup) -> str:
    """The speakable text of one parsed content document `name` (changed in place).

    `doc_kind` is the document's kind ("chapter", "dedication", ... or None) and gives bare chapter
    numbers their label word; `notes` finds a referenced note when `read_notes` is set.
    """
    _shape_notes(soup, name, language, read_notes, notes)
    _shape_figures(soup, captions)
    _shape_verse(soup)
    _shape_headings(soup, doc_kind, language)
    return soup_text(soup)


def _classes(tag: Any) -> set[str]:
    return {str(c).lower() for c in (tag.get("class") or [])}


def _is_noteref(tag: Any) -> bool:
    """A note reference: by its semantics, or a link like `<sup><a href="#n1">1</a></sup>`,
    `<a href="#n1"><sup>1</sup></a>` or Project Gutenberg's `<a class="fnanchor" href="#f1">[1]</a>`."""
    if "noteref" in epub_types(tag) or tag.get("role") == "doc-noteref":
        return True
    if tag.name != "a" or "#" not in str(tag.get("href") or ""):
        return False
    in_sup = (tag.parent is not None and tag.parent.name == "sup") or tag.find("sup") is not None
    return _is_marker(tag) and (in_sup or bool(_classes(tag) & _NOTE_CLASSES))


def _is_marker(tag: Any) -> bool:
    """Text like "1", "[12]", "*" or "†": a note's number or sign, not words."""
    label = tag.get_text(strip=True).strip("[]()")
    return 0 < len(label) <= 4 and (label.isdigit() or all(not c.isalnum() for c in label))


def _is_note(tag: Any) -> bool:
    """A note placed in the text: `<aside epub:type="footnote">`, or a block of class "footnote"."""
    if tag.name not in ("aside", "div", "section", "p", "li", "ol", "ul"):
        return False
    return bool((tag.name == "aside" and set(epub_types(tag)) & _NOTE_TYPES) or _classes(tag) & _NOTE_BLOCKS)


def _is_backlink(tag: Any) -> bool:
    return "backlink" in epub_types(tag) or tag.get("role") == "doc-backlink"


def _shape_notes(soup: Any, name: str, language: str, read_notes: bool, notes: NoteLookup) -> None:
    for tag in soup.find_all(_is_backlink):
        tag.decompose()
    last: dict[int, Any] = {}  # paragraph -> what was put after it last: notes keep their order
    for ref in soup.find_all(_is_noteref):
        block = ref.find_parent(_PARAGRAPHS)
        note = _note_text(ref, name, notes) if read_notes else None
        sup = ref.parent if ref.parent is not None and ref.parent.name == "sup" else None
        outer = sup if sup is not None and sup.get_text(strip=True) == ref.get_text(strip=True) else ref
        _close_gap(outer)
        outer.decompose()
        if note and block is not None:
            said = soup.new_tag("p")
            said.string = f"{note_label(language)}: {note}"
            last.get(id(block), block).insert_after(said)
            last[id(block)] = said
    for tag in soup.find_all(_is_note):  # after the references: a note may live in this document
        tag.decompose()


def _close_gap(marker: Any) -> None:
    """"observation <ref>19</ref>." must not become "observation .": drop the space before the marker."""
    from bs4 import NavigableString

    before, after = marker.previous_sibling, marker.next_sibling
    if (isinstance(before, NavigableString) and isinstance(after, NavigableString)
            and str(before).endswith(" ") and str(after)[:1] in ".,;:!?…)]"):
        before.replace_with(str(before).rstrip(" "))


def _note_text(ref: Any, name: str, notes: NoteLookup) -> str | None:
    href = str(ref.get("href") or "")
    path, _, fragment = href.partition("#")
    if not fragment:
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), path)) if path else name
    element = notes(target, fragment)
    if element is not None and element.name in ("a", "span", "sup"):  # the id sits on the note's own number
        element = element.find_parent(["p", "li", "dd", "div", "aside", "section"]) or element
    if element is None:
        return None
    note = parse_html(str(element))
    for tag in note.find_all(lambda t: _is_backlink(t) or (t.name == "a" and _is_marker(t))):
        tag.decompose()
    text = re.sub(r"^[\[(]?\d{1,4}[\])]?[.:]?\s+", "", soup_text(note).replace("\n", " "))
    return " ".join(text.split()) or None


def _shape_figures(soup: Any, captions: bool) -> None:
    if not captions:
        for tag in soup.find_all("figcaption"):
            tag.decompose()
        return
    for img in soup.find_all("img"):
        figure = img.find_parent("figure")
        alt = str(img.get("alt") or "").strip()
        if alt and (figure is None or figure.find("figcaption") is None):
            said = soup.new_tag("p")
            said.string = alt
            img.replace_with(said)


def _is_verse(tag: Any) -> bool:
    classes = {str(c).lower() for c in (tag.get("class") or [])}
    return bool(set(epub_types(tag)) & (_VERSE_TYPES | _SHAPED_TYPES) or classes & _VERSE_CLASSES)


def _shape_verse(soup: Any) -> None:
    for container in soup.find_all(_is_verse):
        for br in container.find_all("br"):
            br.replace_with(LINE_BREAK)


def _label_kind(tag: Any, doc_kind: str | None) -> str | None:
    """The kind whose label word a bare number in this heading gets ("chapter", "part", ...)."""
    for parent in tag.find_parents(_SECTIONING):
        for token in epub_types(parent):
            if token in LABEL_KINDS:
                return token
    return "chapter" if doc_kind in (None, "chapter", "bodymatter") else None


def _shape_headings(soup: Any, doc_kind: str | None, language: str) -> None:
    groups = soup.find_all("hgroup") + [h for h in soup.find_all(_HEADINGS) if h.find_parent("hgroup") is None]
    for group in groups:
        parts = [group] if group.name != "hgroup" else group.find_all(["p", *_HEADINGS], recursive=False)
        texts = [" ".join(p.get_text(" ", strip=True).split()) for p in parts]
        texts = [t for t in texts if t]
        if not texts:
            group.decompose()
            continue
        marked = any("z3998:roman" in epub_types(t) for t in [group, *group.find_all(True)])
        texts[0] = spoken_heading(texts[0], _label_kind(group, doc_kind), language, roman_marked=marked)
        said = soup.new_tag("p")
        said.string = ". ".join(t.rstrip(".") if i < len(texts) - 1 else t for i, t in enumerate(texts)) + HEADING_END
        group.replace_with(said)
