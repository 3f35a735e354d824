"""How a narrator reads what books hold and the plain number rules get wrong (English voices).

- house numbers with a letter: "221B", "Baker Street 221b" -> "two twenty-one B";
- fractions: "1/3" -> "one third", "3/4" -> "three quarters", "2 1/2" -> "two and a half";
- years in running prose: "in the year of Our Lord 1775", "in 1984" -> "seventeen seventy-five" ...;
- Roman numerals after a section word or a monarch's name: "Chapter XIV" -> "Chapter Fourteen",
  "World War II" -> "World War Two", "Henry VIII" -> "Henry the Eighth".

Each rule is a regular expression with the context that makes the reading safe (docs/text.md states the
rules and their limits); what no rule matches is left to the plain number rules, so nothing is dropped.
Number words come from num2words (`producer.numbers.words`), Roman numerals are read by `roman`.
"""

from __future__ import annotations

import re

import roman

from producer.numbers import words

__all__ = ["book_readings", "house_number_words", "prose_years"]

# --------------------------------------------------------------------------------------- house numbers

# Words that make a number with a lower-case letter after it an address ("Baker Street 221b", "Flat 4c").
_ADDRESS = (r"Street|Road|Avenue|Lane|Place|Square|Terrace|Row|Drive|Way|Court|Crescent|Close|Gardens|"
            r"Boulevard|Flat|Apartment|Apt|Suite|Unit|Room|House|number|No")
# A number with one capital letter glued to it is an address or a name ("221B", "12A", "3D"), never a
# sum; a lower-case letter only next to an address word (else "5m" stays metres). The patterns start
# at a digit (fast on long texts); the words around are looked at only where one matches.
_HOUSE = re.compile(r"(?P<num>\d{1,4})(?P<letter>[A-Za-z])(?![\w'’-]|[.,]\d)")
_NOT_BEFORE_HOUSE = re.compile(r"[\w.,/'’-]")
_ADDRESS_BEFORE = re.compile(rf"\b(?:{_ADDRESS})\.?\s+$", re.IGNORECASE)
_ADDRESS_AFTER = re.compile(rf"\s+(?:[A-Z][a-z]+\s+)?(?:{_ADDRESS})\b")


def house_number_words(digits: str) -> str:
    """A house number as it is said: "221" two twenty-one, "105" one oh five, "300" three hundred,
    "1600" sixteen hundred; up to 99 as a cardinal."""
    value = int(digits)
    if len(digits) != len(str(value)) or value < 100:
        return " ".join(words(int(d)) for d in digits) if digits.startswith("0") and len(digits) > 1 \
            else words(value)
    if value >= 1000:
        return words(value, to="year")
    hundreds, rest = divmod(value, 100)
    if rest == 0:
        return f"{words(hundreds)} hundred"
    return f"{words(hundreds)} {'oh ' if rest < 10 else ''}{words(rest)}"


def _house(m: re.Match[str]) -> str:
    letter = m["letter"]
    if m.start() and _NOT_BEFORE_HOUSE.match(m.string, m.start() - 1):  # inside a longer word or number
        return m[0]
    if letter.islower() and not (_ADDRESS_BEFORE.search(m.string, max(0, m.start() - 16), m.start())
                                 or _ADDRESS_AFTER.match(m.string, m.end())):
        return m[0]
    return f"{house_number_words(m['num'])} {letter.upper()}"


def _house_numbers(text: str) -> str:
    return _HOUSE.sub(_house, text)

# ------------------------------------------------------------------------------------------- fractions

# Denominators read as fractions. Others ("12/25", "7/31") are as likely a day of a month or a score and
# are left as they are; so is a numerator not below its denominator ("50/50", "9/5").
_DENOMINATORS = frozenset({2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 20, 32, 64, 100})
_FRACTION = re.compile(r"(?<![\w/.:,'’-])(?:(?P<whole>\d{1,3})\s+)?(?P<num>\d{1,2})/(?P<den>\d{1,3})"
                       r"(?![\w/'’]|[.,:]\d)")
_IDIOMS = {"24/7": "twenty-four seven", "50/50": "fifty-fifty", "9/11": "nine eleven"}
_IDIOM = re.compile(r"(?<![\w/.:,-])(?:" + "|".join(map(re.escape, _IDIOMS)) + r")(?![\w/]|[.,:]\d)")


def _part(numerator: int, denominator: int) -> str:
    name = {2: "half", 4: "quarter"}.get(denominator) or words(denominator, to="ordinal")
    if numerator == 1:
        return name
    plural = "halves" if name == "half" else name + "s"
    return f"{words(numerator)} {plural}"


def _fraction(m: re.Match[str]) -> str:
    numerator, denominator = int(m["num"]), int(m["den"])
    if denominator not in _DENOMINATORS or not 0 < numerator < denominator:
        return m[0]
    part = _part(numerator, denominator)
    if m["whole"] is None:
        return f"one {part}" if numerator == 1 else part
    return f"{words(int(m['whole']))} and {'a ' if numerator == 1 else ''}{part}"


def _fractions(text: str) -> str:
    text = _IDIOM.sub(lambda m: _IDIOMS[m[0]], text)
    return _FRACTION.sub(_fraction, text)

# ----------------------------------------------------------------------------------------------- years

# A four-digit number from 1000 to 2099 is a year after one of these words ("in 1984", "since 1066", "the
# year of Our Lord 1775", "A.D. 1492", "in early 1775") ...
_YEAR_BEFORE = (r"in|since|by|until|till|from|of|year|circa|ca\.|c\.|before|after|during|around|to|Lord|Domini|"
                r"anno|early|late|mid|spring|summer|autumn|winter")
# ... unless a plural count noun follows: "in 1984 people" is a number of people. Words ending in -s that
# are no plural nouns do not count ("in 1984 was", "by 1850 his").
_NOT_PLURAL = r"was|is|has|as|his|its|this|thus|us|yes|whereas|always|perhaps|unless|less|towards|afterwards"
_COUNTED = (rf"\s+(?:(?!(?:{_NOT_PLURAL})\b)[a-z]+s|people|men|women|children|feet|teeth|geese|mice|sheep|"
            r"deer|fish|head|more|other|others|million|thousand)\b")
_AD_YEAR = re.compile(r"\bA\.?D\.?(\s+)(\d{1,4})\b(?![.,]\d)")  # "A.D. 1492", "AD 79": the letters, the year
_BEFORE_YEAR = re.compile(rf"(?<![\w.])(?:{_YEAR_BEFORE})\s+$", re.IGNORECASE)
_YEAR = re.compile(rf"(?:1\d\d\d|20\d\d)\b(?![.,]\d)(?!{_COUNTED})")


def prose_years(text: str) -> str:
    """Four-digit years in running prose as years ("in nineteen eighty-four"); see `_YEAR_BEFORE`. The
    pattern starts at the digits; the word before is looked at only there."""
    def year(m: re.Match[str]) -> str:
        before = _BEFORE_YEAR.search(m.string, max(0, m.start() - 24), m.start())
        if before is None or not m.string[m.start() - 1].isspace():
            return m[0]
        return words(int(m[0]), to="year")

    text = _AD_YEAR.sub(lambda m: f"A D{m[1]}{words(int(m[2]), to='year')}", text)
    return _YEAR.sub(year, text)


# -------------------------------------------------------------------------------------- Roman numerals

# Words a Roman numeral counts after: "Chapter XIV", "Book II", "Part IV", "World War II".
_SECTION_WORDS = r"Chapter|Book|Part|Volume|Vol\.|Act|Scene|Canto|Stave|Section|Psalm|Appendix|Article|World War"
# Names of monarchs and popes that take a regnal number: "Henry VIII", "Louis XIV", "Pius X".
_REGNAL_NAMES = ("Henry|Edward|George|William|Richard|James|Charles|Louis|Elizabeth|Mary|Anne|Victoria|John|"
                 "Philip|Peter|Catherine|Frederick|Napoleon|Pius|Leo|Gregory|Benedict|Innocent|Clement|Boniface|"
                 "Urban|Alexander|Nicholas|Ferdinand|Alfonso|Carlos|Gustav|Gustavus|Henri|Francis|Otto|Wilhelm|"
                 "Friedrich|Ivan|Ramesses|Rameses|Ptolemy|Constantine|Harold|Edmund|Stephen|Robert|David|Paul")
# The pattern starts at a numeral (fast on long texts); the word before is looked at only there.
_NUMERAL = re.compile(r"(?<=\s)(?:[IVXLCDM]+|[ivxlcdm]{2,})\b(?!['’]\w)")
_SECTION_BEFORE = re.compile(rf"(?<!\w)(?:{_SECTION_WORDS})\s+$", re.IGNORECASE)
_NAME_BEFORE = re.compile(rf"(?<!\w)(?:{_REGNAL_NAMES})\s+$")
_REGNAL_NUMERAL = re.compile(r"I|[IVXLC]{2,}|[VXLC]")
# "I" after a name is the pronoun unless what follows says otherwise ("Charles I was", "Charles I of",
# "Charles I." but not "Henry I said").
_AFTER_FIRST = re.compile(r"\s*$|\s*[^\w\s]|\s+(?:of|and|was|had|became|died|reigned|ruled|succeeded|married)\b|"
                          r"\s+[A-Z]")


def _roman(numeral: str) -> int | None:
    try:
        return int(roman.fromRoman(numeral.upper()))
    except roman.InvalidRomanNumeralError:
        return None


def _capitalized(said: str) -> str:
    return said[:1].upper() + said[1:]


def _numeral(m: re.Match[str]) -> str:
    numeral, window = m[0], max(0, m.start() - 24)
    section = _SECTION_BEFORE.search(m.string, window, m.start())
    if section is not None:
        if numeral == "I" and not section[0][0].isupper():  # "part I think": the pronoun
            return numeral
        value = _roman(numeral)
        return numeral if value is None else _capitalized(words(value))
    if not _REGNAL_NUMERAL.fullmatch(numeral) or _NAME_BEFORE.search(m.string, window, m.start()) is None:
        return numeral
    if numeral == "I" and not _AFTER_FIRST.match(m.string, m.end()):
        return numeral
    value = _roman(numeral)
    return numeral if value is None else f"the {_capitalized(words(value, to='ordinal'))}"


def _roman_numerals(text: str) -> str:
    return _NUMERAL.sub(_numeral, text)


def book_readings(text: str) -> str:
    """Roman numerals, fractions and house numbers read as a narrator reads them (years: `prose_years`,
    which runs later, after dates and ordinals)."""
    return _house_numbers(_fractions(_roman_numerals(text)))
