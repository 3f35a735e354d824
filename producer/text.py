"""Text normalization and chunking: what the voice is asked to say, cut into pieces it can say.

`normalize` turns numbers, dates, times, currency and common abbreviations into words for the voice's
language and reports (never silently drops) what it cannot speak. `split_chunks` cuts text into
sentence-aligned chunks under a hard character cap without losing a single character.

Whitespace is structure here: one blank line (two newlines) is a paragraph break, two or more blank
lines (three newlines) a chapter break; `LINE_BREAK` and `HEADING_END` mark verse lines and headings
(see `producer.chunks`). `normalize` collapses longer runs to those forms and keeps the marks.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from producer import languages
from producer.chunks import HEADING_END, LINE_BREAK, MIN_CHUNK_CHARS, TextChunk, split_chunks
from producer.japanese import normalize_japanese
from producer.numbers import digits_words, int_words, num2words_lang, number_words, replace_numbers
from producer.numbers import words as _words
from producer.reading import book_readings, prose_years

__all__ = ["MIN_CHUNK_CHARS", "PIECE_END", "Normalized", "TextChunk", "has_speakable", "normalize", "split_chunks",
           "written_form"]

@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalized text plus one-line warnings about what could not be made speakable."""

    text: str
    warnings: list[str]


def has_speakable(text: str) -> bool:
    """True when `text` holds at least one letter or digit (emoji, symbols and spaces alone are not)."""
    return any(ch.isalnum() for ch in text)


# --------------------------------------------------------------------------------------- normalize

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_MONTH_BY_PREFIX = {m[:3].lower(): i for i, m in enumerate(_MONTHS, 1)} | {"sept": 9}
_MONTH_RE = (r"(?P<month>Jan(?:uary|\.)?|Feb(?:ruary|\.)?|Mar(?:ch|\.)?|Apr(?:il|\.)?|May|Jun(?:e|\.)?|"
             r"Jul(?:y|\.)?|Aug(?:ust|\.)?|Sep(?:t(?:ember|\.)?|\.)?|Oct(?:ober|\.)?|Nov(?:ember|\.)?|"
             r"Dec(?:ember|\.)?)")
# Where one written piece of a text ends and the next begins (`producer.spoken` marks them to know which
# written text each spoken chunk says): a Unicode noncharacter, which no text holds and every rule leaves
# alone. A piece ends where a sentence does.
PIECE_END = "\ufdd0"
_SENTENCE_END_AHEAD = r"(?=\s*$|\s*\n|\s*\ufdd0|\s+[A-Z\"'“‘(])"
_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "sen", "sen")}
_SCALES = r"(?:thousand|million|billion|trillion)"
# English abbreviations whose reading does not depend on context (St. does: Saint or Street).
_ABBREVIATIONS = {"Dr": "Doctor", "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor",
                  "Jr": "Junior", "Sr": "Senior", "Mt": "Mount", "vs": "versus", "approx": "approximately",
                  "Ave": "Avenue", "Rd": "Road", "Dept": "Department", "Gov": "Governor", "Capt": "Captain",
                  "Sgt": "Sergeant", "Lt": "Lieutenant", "Col": "Colonel", "Gen": "General"}
_SYMBOLS_EN = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "°C": " degrees Celsius",
               "°F": " degrees Fahrenheit", "°": " degrees", "×": " times ", "½": " one half",
               "¼": " one quarter", "¾": " three quarters"}
# Parts of an emoji sequence that carry no meaning of their own once the emoji is gone.
_EMOJI_GLUE = {"\u200d", "\u20e3"} | {chr(c) for c in range(0xFE00, 0xFE10)}
_UNSPEAKABLE_CATEGORIES = {"So", "Sk", "Sm", "Co", "Cn", "Cs", "Cc", "Cf"}
_UNSPEAKABLE_ASCII = set("*_~^|\\`<>{}#")
# Invisible formatting characters: they only steer line breaking, joining, hyphenation or direction on a
# page, so removing them (with no space in their place) leaves exactly the text a reader sees: soft hyphen,
# combining grapheme joiner, Arabic letter mark, Mongolian vowel separator, zero-width space / (non-)joiner,
# direction marks and embeddings, word joiner and invisible operators, direction isolates, BOM. Dropped
# without a warning: there is nothing the user could do about them, and nothing is lost.
INVISIBLE = frozenset("\u00ad\u034f\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d"
                      "\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff")
_DROP_INVISIBLE = {ord(ch): None for ch in INVISIBLE}


def normalize(text: str, language: str = "en") -> Normalized:
    """Make `text` speakable for a voice of `language` (ISO code such as "en", "de", "en_US").

    English gets numbers, ordinals, years, dates, times, currency, percentages and abbreviations as
    words; German, Spanish and French get dates, times, money, percentages and ordinals in their own
    words and order (`producer.languages`), Japanese its own (`producer.japanese`); other languages
    num2words knows get numbers as words. A language's rules only ever run for a voice of that
    language. Characters nothing can speak
    (emoji, symbols, control characters) are removed and listed in `warnings`. Whitespace is collapsed:
    spaces to one, blank-line runs to a paragraph ("\\n\\n") or chapter ("\\n\\n\\n") break.
    Never raises on any `str`.
    """
    warnings: list[str] = []
    text = _clean(text)
    lang = num2words_lang(language)
    if lang is None:
        if any(ch.isdigit() for ch in text):
            warnings.append(f"numbers left as digits: no number words for language {language!r} (write them "
                            "as words, or add lexicon lines such as 12<TAB>the words)")
    elif lang.startswith("en"):
        text = _normalize_english(text, lang)
    elif lang == "ja":
        text = normalize_japanese(text)
    elif lang in languages.RULES:
        text = languages.normalize_dates_money(text, lang)
        text = replace_numbers(text, lang)
    else:
        text = replace_numbers(text, lang)
    text, dropped = _drop_unspeakable(text)
    if dropped:
        warnings.append("unspeakable characters dropped: " + " ".join(dropped)
                        + " (to have one said, write it as words in the text)")
    return Normalized(text=_collapse_whitespace(text), warnings=warnings)


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text.translate(_DROP_INVISIBLE))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def written_form(text: str) -> str:
    """`text` as a reader sees it, the way `normalize` starts: NFC, invisible formatting characters
    dropped, line ends as LF, no whitespace around it."""
    return _clean(text).strip()


def _digit_groups(m: re.Match[str]) -> str:
    """"555-1234" is read digit by digit, group by group; "10-20" is a range."""
    groups = m[0].split("-")
    if len(groups) == 2 and all(re.fullmatch(r"1[1-9]\d\d|20\d\d", g) for g in groups):
        return f"{_year_words(groups[0])} to {_year_words(groups[1])}"
    if len(groups) == 2 and sum(map(len, groups)) < 7 and not any(g.startswith("0") for g in groups):
        return f"{_words(int(groups[0]))} to {_words(int(groups[1]))}"
    return ", ".join(digits_words(g, "en") for g in groups)


def _year_words(digits: str) -> str:
    return _words(int(digits), to="year")


def _normalize_english(text: str, lang: str) -> str:
    for symbol, words in _SYMBOLS_EN.items():
        text = text.replace(symbol, words)
    text = _dates(text)
    text = _times(text)
    text = _currency(text)
    text = _abbreviations(text)
    text = book_readings(text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?(?:%|percent\b)", lambda m: f"{number_words(m[1])} percent", text)
    text = re.sub(r"(?<=\d)\s?[–—]\s?(?=\d)", "-", text)
    text = re.sub(r"(?<![\w.,-])\d+(?:-\d+)+(?![\w-])", _digit_groups, text)
    text = re.sub(r"\b(\d{1,15})(?:st|nd|rd|th)\b", lambda m: _words(int(m[1]), to="ordinal"), text)
    text = re.sub(r"\b(1[1-9]\d0|20[0-9]0)s\b", lambda m: _plural(_year_words(m[1])), text)
    text = re.sub(r"\b(\d{1,4})(\s+)(AD|BC|BCE|CE)\b",
                lambda m: f"{_year_words(m[1])}{m[2]}{' '.join(m[3])}", text)
    text = prose_years(text)
    text = re.sub(r"#(?=\d)", "number ", text)
    # a number glued to letters is said apart from them ("5kg", "MP3"): "five kg", not "fivekg"
    text = re.sub(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)", " ", text)
    return replace_numbers(text, lang)


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _date_words(month: int, day: int | None, year: str | None, day_first: bool = False) -> str:
    name = _MONTHS[month - 1]
    if day is None:
        head = name
    elif day_first:
        head = f"the {_words(day, to='ordinal')} of {name}"
    else:
        head = f"{name} {_words(day, to='ordinal')}"
    return f"{head}, {_year_words(year)}" if year else head


def _month_number(name: str) -> int:
    return _MONTH_BY_PREFIX[name.rstrip(".")[:4].lower() if name.lower().startswith("sept") else
                            name.rstrip(".")[:3].lower()]


def _dates(text: str) -> str:
    def iso(m: re.Match[str]) -> str:
        month, day = int(m[2]), int(m[3])
        return _date_words(month, day, m[1]) if 1 <= month <= 12 and 1 <= day <= 31 else m[0]

    def slashed(m: re.Match[str]) -> str:  # US order (month/day/year) unless the first part cannot be a month
        first, second = int(m[1]), int(m[2])
        month, day, day_first = (first, second, False) if first <= 12 else (second, first, True)
        ok = 1 <= month <= 12 and 1 <= day <= 31
        return _date_words(month, day, m[3], day_first) if ok else m[0]

    def month_day(m: re.Match[str]) -> str:
        day = int(m["day"])
        return _date_words(_month_number(m["month"]), day, m["year"]) if 1 <= day <= 31 else m[0]

    def day_month(m: re.Match[str]) -> str:
        day = int(m["day"])
        return _date_words(_month_number(m["month"]), day, m["year"], True) if 1 <= day <= 31 else m[0]

    text = re.sub(r"\b(\d{4})-(\d{2})-(\d{2})\b", iso, text)
    text = re.sub(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b", slashed, text)
    text = re.sub(_MONTH_RE + r"\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+(?P<year>\d{4})\b)?",
                  month_day, text)
    text = re.sub(r"\b(?P<day>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH_RE +
                r"(?:,?\s+(?P<year>\d{4})\b)?", day_month, text)
    return re.sub(_MONTH_RE + r"(\s+)(?P<year>\d{4})\b",
                  lambda m: f"{m['month']}{m[2]}{_year_words(m['year'])}", text)


def _meridiem(m: re.Match[str], group: str) -> str:
    """" A M" / " P M", keeping the full stop when the abbreviation also ended the sentence."""
    value = m[group]
    if not value:
        return ""
    letters = " " + " ".join(c.upper() for c in value if c.isalpha())
    ends_sentence = value.endswith(".") and re.match(_SENTENCE_END_AHEAD, m.string[m.end():])
    return letters + "." if ends_sentence else letters


def _times(text: str) -> str:
    ampm = r"(?:\s*(?P<ampm>[aApP]\.[mM]\.|[aApP][mM]\b))?"

    def clock(m: re.Match[str]) -> str:
        hour, minute = int(m["h"]), int(m["m"])
        if hour > 24 or minute > 59:
            return m[0]
        words = _words(hour)
        if minute == 0:
            words += "" if m["ampm"] else " o'clock"
        else:
            words += (" oh " if minute < 10 else " ") + _words(minute)
        return words + _meridiem(m, "ampm")

    text = re.sub(r"\b(?P<h>\d{1,2}):(?P<m>\d{2})(?!:?\d)" + ampm, clock, text)
    return re.sub(r"\b(?P<h>\d{1,2})\s*(?P<ampm>[aApP]\.[mM]\.|[aApP][mM]\b)",
                lambda m: _words(int(m["h"])) + _meridiem(m, "ampm") if int(m["h"]) <= 12 else m[0], text)


def _currency(text: str) -> str:
    def money(m: re.Match[str]) -> str:
        one, many, sub_one, sub_many = _CURRENCIES[m["sym"]]
        amount = m["amount"].replace(",", "")
        if m["scale"]:
            return f"{number_words(amount)} {m['scale']} {many}"
        whole, _, frac = amount.partition(".")
        value = int(whole or "0")
        words = f"{int_words(whole or '0')} {one if value == 1 else many}"
        if frac and len(frac) == 2 and int(frac):
            cents = int(frac)
            cents_words = f"{_words(cents)} {sub_one if cents == 1 else sub_many}"
            words = f"{words} and {cents_words}" if value else cents_words
        elif frac and int(frac) and len(frac) != 2:
            words = f"{number_words(amount)} {many}"
        return words

    return re.sub(r"(?P<sym>[$€£¥])\s?(?P<amount>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
                rf"(?:\s(?P<scale>{_SCALES})\b)?", money, text)


def _abbreviations(text: str) -> str:
    def fixed(m: re.Match[str]) -> str:
        return _ABBREVIATIONS[m[1]] + ("." if re.match(r"\s*$", m.string[m.end():]) else "")

    names = "|".join(sorted(_ABBREVIATIONS, key=len, reverse=True))
    text = re.sub(rf"\b({names})\.(?=\s|$)", fixed, text)
    text = re.sub(r"\bSt\.(?=\s+[A-Z])(?<!\w\sSt\.)", "Saint", text)
    text = re.sub(r"\bSt\.", lambda m: "Street" + _kept_stop(m), text)
    text = re.sub(r"\bNo\.(?=\s*\d)", "number", text)
    text = re.sub(r"\be\.g\.(?=\s|,|$)", "for example", text)
    text = re.sub(r"\bi\.e\.(?=\s|,|$)", "that is", text)
    return re.sub(r"\betc\.", lambda m: "et cetera" + _kept_stop(m), text)


def _kept_stop(m: re.Match[str]) -> str:
    """"." when the abbreviation's full stop also ended the sentence."""
    return "." if re.match(_SENTENCE_END_AHEAD, m.string[m.end():]) else ""


# Characters `_drop_unspeakable` may have to look at: everything but plain printable ASCII and the few
# unspeakable ASCII symbols. Text without any (most English text) is returned without a per-character pass.
_MAYBE_UNSPEAKABLE = re.compile(r"[^\t\n\x20-\x7e\ufdd0]|[*_~^|\\`<>{}#]")


def _drop_unspeakable(text: str) -> tuple[str, list[str]]:
    if not _MAYBE_UNSPEAKABLE.search(text):
        return text, []
    kept: list[str] = []
    dropped: dict[str, None] = {}
    for ch in text:
        if ch in "\n\t" or ch == PIECE_END:
            kept.append(ch)
        elif ch in _EMOJI_GLUE or "\U0001f3fb" <= ch <= "\U0001f3ff" or "\U000e0020" <= ch <= "\U000e007f":
            continue
        elif ch in _UNSPEAKABLE_ASCII or unicodedata.category(ch) in _UNSPEAKABLE_CATEGORIES:
            dropped[ch] = None
            kept.append(" ")
        else:
            kept.append(ch)
    return "".join(kept), list(dropped)


def _collapse_whitespace(text: str) -> str:
    text = re.sub(rf"[^\S\n{LINE_BREAK}{HEADING_END}]+", " ", text)
    text = re.sub(rf" ?([{LINE_BREAK}{HEADING_END}]) ?", r"\1", text)
    text = re.sub(r" ([.,!?;:…])(?=\s|$)", r"\1", text)  # a dropped emoji must not strand punctuation
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip()
