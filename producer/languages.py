"""Dates, times, money, percentages and ordinals read aloud in German, Spanish and French.

num2words makes the number words (cardinals, ordinals, years, currency unit names); what no library
does is find those forms in running text and put the words in the order each language says them, so
the patterns below are written by hand, one small table per language. English has its own, richer
rules in `producer.text`; every other language num2words knows gets its numbers as words only.

Written forms read, per language (docs/text.md has the table):
- de: `3. März 2024`, `03.03.2024`, `2024-03-03`; `14:30`, `14.30 Uhr`; `5 €`, `€5`, `5,50 €`, `12 $`;
  `50 %`; ordinals only inside dates (`3.` alone is ambiguous with a sentence end).
- es: `3 de marzo de 2024`, `3/3/2024`, `2024-03-03`; `14:30`; money and `%` as above; `1.º`, `2.ª`, `3er`.
- fr: `3 mars 2024`, `1er mars`, `3/3/2024`, `2024-03-03`; `14:30`, `14h30`, `14 h`; money and `%`;
  `1er`, `1re`, `2e`, `2ème`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from num2words import CONVERTER_CLASSES

from producer.numbers import local_number, number_words, words

__all__ = ["RULES", "normalize_dates_money"]

_CURRENCY_CODES = {"€": "EUR", "$": "USD", "£": "GBP", "EUR": "EUR", "USD": "USD", "GBP": "GBP"}
# "1.234,50", "5,50", "5" and, from text written the English way, "5.50" (two digits: never thousands)
_AMOUNT = r"\d{1,3}(?:[.\u202f ]\d{3})+(?:,\d{1,2})?(?!\d)|\d+\.\d{2}(?!\d)|\d+(?:,\d{1,2})?"


@dataclass(frozen=True, slots=True)
class LanguageRules:
    """How one language says dates, times, money and percentages (words and their order)."""

    months: tuple[str, ...]
    date: Callable[[int, int, int | None, str], str]  # day, month, year, the word before the date
    clock: Callable[[int, int], str]  # hour, minute
    percent: str
    money_and: str  # between the whole units and the cents
    one: dict[bool, str]  # "one" before a unit: {feminine: word}
    feminine_units: frozenset[str]
    ordinal: str  # pattern of a written ordinal; group 1 is the number, group 2 its suffix


def _de_date(day: int, month: int, year: int | None, before: str) -> str:
    # "am dritten März", "der dritte März", "dritter März": the ending follows the word before the date
    word = before.lower()
    ending = "n" if word in _DE_DATIVE else "" if word in ("der", "die", "das") else "r"
    said = f"{words(day, 'de', 'ordinal')}{ending} {_DE_MONTHS[month - 1]}"
    return f"{said} {words(year, 'de', 'year')}" if year else said


def _es_date(day: int, month: int, year: int | None, before: str) -> str:
    said = f"{'primero' if day == 1 else words(day, 'es')} de {_ES_MONTHS[month - 1]}"
    return f"{said} de {words(year, 'es')}" if year else said


def _fr_date(day: int, month: int, year: int | None, before: str) -> str:
    said = f"{'premier' if day == 1 else words(day, 'fr')} {_FR_MONTHS[month - 1]}"
    return f"{said} {words(year, 'fr')}" if year else said


def _de_clock(hour: int, minute: int) -> str:
    said = f"{'ein' if hour == 1 else words(hour, 'de')} Uhr"
    return f"{said} {words(minute, 'de')}" if minute else said


def _es_clock(hour: int, minute: int) -> str:
    said = "una" if hour == 1 else words(hour, "es")
    return f"{said} y {words(minute, 'es')}" if minute else f"{said} en punto"


def _fr_clock(hour: int, minute: int) -> str:
    said = "une heure" if hour == 1 else f"{words(hour, 'fr')} heures"
    return f"{said} {words(minute, 'fr')}" if minute else said


_DE_DATIVE = frozenset({"am", "vom", "zum", "den", "bis", "seit", "ab", "dem"})
_DE_MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
              "November", "Dezember")
_ES_MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
              "noviembre", "diciembre")
_FR_MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
              "novembre", "décembre")

RULES: dict[str, LanguageRules] = {
    "de": LanguageRules(_DE_MONTHS, _de_date, _de_clock, "Prozent", "und", {False: "ein", True: "eine"},
                        frozenset(), r"(?!)(\d)()"),
    "es": LanguageRules(_ES_MONTHS, _es_date, _es_clock, "por ciento", "con", {False: "un", True: "una"},
                        frozenset({"GBP"}), r"\b(\d{1,4})(\.?[ºª°]|er\b|ro\b|do\b|to\b|vo\b|no\b)"),
    "fr": LanguageRules(_FR_MONTHS, _fr_date, _fr_clock, "pour cent", "et", {False: "un", True: "une"},
                        frozenset({"GBP"}), r"\b(\d{1,4})(er|re|ère|e|ème|è)\b"),
}


def normalize_dates_money(text: str, lang: str) -> str:
    """Dates, times, money, percentages and ordinals of `lang` (a key of RULES) as words; other digits
    are left for `producer.numbers.replace_numbers`. Never raises."""
    rules = RULES[lang]
    text = _dates(text, lang, rules)
    text = _times(text, lang, rules)
    text = _money(text, lang, rules)
    text = re.sub(rf"({_AMOUNT})\s?%", lambda m: f"{number_words(local_number(m[1], lang), lang)} {rules.percent}",
                  text)
    return re.sub(rules.ordinal, lambda m: _ordinal(m, lang), text)


def _ordinal(m: re.Match[str], lang: str) -> str:
    said = words(int(m[1]), lang, "ordinal")
    feminine = "ª" in m[2] or m[2] in ("re", "ère") or m[2] == "era"
    if feminine and lang == "es" and said.endswith("o"):
        return said[:-1] + "a"
    if feminine and lang == "fr" and said == "premier":
        return "première"
    return said


def _dates(text: str, lang: str, rules: LanguageRules) -> str:
    def said(m: re.Match[str], day: int, month: int, year: str | None) -> str:
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return m[0]
        before = m["before"] or ""
        return before + rules.date(day, month, int(year) if year else None, before.strip())

    before = r"(?P<before>\b\w+\s+)?"
    text = re.sub(before + r"\b(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})\b",
                  lambda m: said(m, int(m["d"]), int(m["m"]), m["y"]), text)
    separator = r"\." if lang == "de" else r"[/-]"
    text = re.sub(before + rf"\b(?P<d>\d{{1,2}}){separator}(?P<m>\d{{1,2}}){separator}(?P<y>\d{{4}})\b",
                  lambda m: said(m, int(m["d"]), int(m["m"]), m["y"]), text)
    months = "|".join(rules.months)
    day = {"de": r"(?P<d>\d{1,2})\.", "es": r"(?P<d>\d{1,2})(?:\.?º)?\s+de", "fr": r"(?P<d>\d{1,2})(?:er)?"}[lang]
    year = r"(?:\s+de)?\s+(?P<y>\d{4})\b" if lang == "es" else r"\s+(?P<y>\d{4})\b"
    return re.sub(before + rf"\b{day}\s+(?P<month>{months})\b(?:{year})?",
                  lambda m: said(m, int(m["d"]), rules.months.index(m["month"]) + 1, m["y"]), text,
                  flags=re.IGNORECASE)


def _times(text: str, lang: str, rules: LanguageRules) -> str:
    def clock(m: re.Match[str]) -> str:
        hour, minute = int(m["h"]), int(m["m"] or 0)
        return rules.clock(hour, minute) if hour <= 24 and minute <= 59 else m[0]

    if lang == "de":  # "14.30 Uhr" / "14:30 Uhr" / "14 Uhr": the word "Uhr" is part of what is said
        text = re.sub(r"\b(?P<h>\d{1,2})(?:[.:](?P<m>\d{2}))?\s+Uhr\b", clock, text)
    if lang == "fr":
        text = re.sub(r"\b(?P<h>\d{1,2})\s?h\s?(?P<m>\d{2})?(?!\w)", clock, text)
    return re.sub(r"\b(?P<h>\d{1,2}):(?P<m>\d{2})(?!:?\d)", clock, text)


def _money(text: str, lang: str, rules: LanguageRules) -> str:
    def money(m: re.Match[str]) -> str:
        code = _CURRENCY_CODES[m["pre"] or m["post"]]
        (unit_one, unit_many), (sub_one, sub_many) = CONVERTER_CLASSES[lang].CURRENCY_FORMS[code]
        amount = m["amount"]
        plain = amount if re.fullmatch(r"\d+\.\d{2}", amount) else local_number(amount, lang)
        whole, _, cents_raw = plain.partition(".")
        value, cents = int(whole), int(cents_raw.ljust(2, "0")) if cents_raw else 0
        one = rules.one[code in rules.feminine_units]
        said = f"{one if value == 1 else words(value, lang)} {unit_one if value == 1 else unit_many}"
        if not cents:
            return said + m["space"]
        sub = f"{rules.one[False] if cents == 1 else words(cents, lang)} {sub_one if cents == 1 else sub_many}"
        return (f"{said} {rules.money_and} {sub}" if value else sub) + m["space"]

    symbols = r"€|\$|£|EUR\b|USD\b|GBP\b"
    text = re.sub(rf"(?P<pre>{symbols})\s?(?P<amount>{_AMOUNT})(?P<post>)(?P<space>)", money, text)
    return re.sub(rf"(?P<pre>)(?P<amount>{_AMOUNT})\s?(?P<post>{symbols})(?P<space>)", money, text)
