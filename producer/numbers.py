"""Numbers as words in any language num2words knows: the pieces every language's normalization shares.

num2words does the words; what is here decides how a digit run is read (a cardinal, digit by digit)
and how a decimal number is written in each language ("1,234.5" in English, "1.234,5" elsewhere).
"""

from __future__ import annotations

import functools
import re

from num2words import CONVERTER_CLASSES, num2words

MAX_CARDINAL_DIGITS = 15  # longer digit runs (ids, phone numbers) are read digit by digit
# The word between the whole part and the digits after the point, where num2words' own is not a word
_POINT = {"en": "point"}


def num2words_lang(language: str) -> str | None:
    """The num2words language for an ISO code ("en", "de_DE", "pt-BR"); None when it has none."""
    code = language.replace("-", "_")
    for candidate in (code, code.split("_")[0].lower()):
        if candidate in CONVERTER_CLASSES:
            return candidate
    return None


@functools.lru_cache(maxsize=8192)
def words(number: int | float, lang: str = "en", to: str = "cardinal") -> str:
    """`number` in words (`to`: cardinal, ordinal, year); digit by digit where num2words cannot. Cached:
    notices say the same hours, dates and amounts again and again, and num2words takes ~0.1 ms a call."""
    try:
        return str(num2words(number, lang=lang, to=to))
    except (OverflowError, NotImplementedError, TypeError, ValueError, KeyError):
        # num2words gaps (a language without ordinals, huge numbers): say the digits, lose nothing
        return " ".join(str(num2words(int(d), lang=lang)) for d in str(number) if d.isdigit())


def digits_words(digits: str, lang: str) -> str:
    return " ".join(words(int(d), lang) for d in digits)


def int_words(digits: str, lang: str = "en") -> str:
    """Cardinal for a plain digit run; leading zeros and very long runs are read digit by digit."""
    if len(digits) > MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits.startswith("0")):
        return digits_words(digits, lang)
    return words(int(digits), lang)


def number_words(raw: str, lang: str = "en") -> str:
    """Words for "1234", "3.14" or "42" (a point, no separators); digits after the point one by one."""
    whole, _, frac = raw.replace(",", "").partition(".")
    said = int_words(whole, lang) if whole else words(0, lang)
    if frac:
        point = _POINT.get(lang[:2]) or words(0.5, lang).split()[1]
        said += f" {point} " + digits_words(frac, lang)
    return said


def local_number(raw: str, lang: str) -> str:
    """A number as written in `lang` ("1.234,5" outside English) in the "1234.5" form `number_words` reads."""
    if lang.startswith("en"):
        return raw.replace(",", "")
    return raw.replace(".", "").replace(" ", "").replace("\u202f", "").replace(",", ".")


def replace_numbers(text: str, lang: str) -> str:
    """Remaining digits as words. English: "1,234.5"; other languages: "1.234,5" or "1234,5"."""
    if lang.startswith("en"):
        text = re.sub(r"(?<![\w.,])-(?=\d)", " minus ", text)
        number = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+\.\d+|\d+"
        return re.sub(number, lambda m: number_words(m[0], lang), text)
    number = r"\d{1,3}(?:\.\d{3})+(?:,\d+)?(?!\d)|\d+,\d+|\d+"
    return re.sub(number, lambda m: number_words(local_number(m[0], lang), lang), text)
