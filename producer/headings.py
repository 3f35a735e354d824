"""How a narrator says a book's headings and its opening line, in the voice's language.

A heading that is a chapter number ("III", "3", "Chapter III", "IV. The Storm") is spoken with the
number as a word: "Chapter Three", "Chapter Four. The Storm". Numbers come from num2words; the label
words ("Chapter", "Part", "by") come from a small table. A language outside the table keeps its
headings as written (numbers are then read by `normalize`) and gets "Title. Author." as its opening.
"""

from __future__ import annotations

import re

import roman
from num2words import num2words

__all__ = ["LABEL_KINDS", "book_intro", "note_label", "spoken_heading"]

# label words per language: chapter, part, volume, the "by" of "Title by Author", and "Note"
_WORDS = {
    "en": ("Chapter", "Part", "Volume", "by", "Note"),
    "de": ("Kapitel", "Teil", "Band", "von", "Anmerkung"),
    "fr": ("Chapitre", "Partie", "Volume", "par", "Note"),
    "es": ("Capítulo", "Parte", "Volumen", "de", "Nota"),
    "it": ("Capitolo", "Parte", "Volume", "di", "Nota"),
    "nl": ("Hoofdstuk", "Deel", "Deel", "door", "Noot"),
    "pt": ("Capítulo", "Parte", "Volume", "de", "Nota"),
}
LABEL_KINDS = ("chapter", "part", "volume")  # section kinds whose bare number gets a label word
_HEADING = re.compile(r"^(?:(?P<label>[^\W\d_]+)\s+)?(?P<num>[IVXLCDM]+|[ivxlcdm]+|\d{1,4})"
                      r"(?P<rest>(?:[.:—–-]\s*|\s+[—–-]\s*)(?P<title>\S.*)?)?$", re.DOTALL)


def _words(language: str) -> tuple[str, ...] | None:
    return _WORDS.get(language.replace("-", "_").split("_")[0].lower())


def _number(num: str, roman_marked: bool) -> int | None:
    if num.isdigit():
        return int(num)
    if not (num.isupper() or roman_marked):  # "mix", "civil", "did": words, not numerals
        return None
    try:
        return int(roman.fromRoman(num.upper()))
    except roman.InvalidRomanNumeralError:
        return None


def spoken_heading(text: str, kind: str | None, language: str, *, roman_marked: bool = False) -> str:
    """`text` as a narrator says it: a chapter number becomes words, with a label when it has none.

    `kind` is the section's kind ("chapter", "part", "volume"; anything else gets no label word);
    `roman_marked` says the book marked the numeral as Roman (lower-case numerals count only then).
    Anything that is not a number heading comes back unchanged, as does every heading in a language
    without label words.
    """
    words = _words(language)
    m = _HEADING.match(text.strip())
    if words is None or m is None:
        return text
    value = _number(m["num"], roman_marked)
    if value is None or value == 0:
        return text
    spoken = str(num2words(value, lang=language.replace("-", "_").split("_")[0].lower()))
    spoken = spoken[:1].upper() + spoken[1:]
    label = m["label"]
    if label is None and kind in LABEL_KINDS:
        label = words[LABEL_KINDS.index(kind)]
    head = f"{label.capitalize() if label.isupper() else label} {spoken}" if label else spoken
    return f"{head}. {m['title'].strip()}" if m["title"] else head


def book_intro(title: str, authors: list[str], language: str) -> str:
    """The book's opening line: "Title by Author and Author" ("Title. Author." without label words)."""
    words = _words(language)
    if not authors:
        return title
    names = " and ".join(authors) if words is None or words[3] == "by" else ", ".join(authors)
    return f"{title} {words[3]} {names}." if words else f"{title}. {names}."


def note_label(language: str) -> str:
    """The word said before a note read after its paragraph ("Note")."""
    words = _words(language)
    return words[4] if words else "Note"
