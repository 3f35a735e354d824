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
# sum; a lower-case letter only next to an address word (else "5m" stays metres).
_HOUSE_UPPER = re.compile(r"(?<![\w.,/'’-])(?P<num>\d{1,4})(?P<letter>[A-Z])(?![\w'’-]|[.,]\d)")
_HOUSE_BEFORE = re.compile(rf"\b(?P<addr>(?:{_ADDRESS})\.?\s+)(?P<num>\d{{1,4}})(?P<letter>[a-z])(?![\w'’-]|[.,]\d)",
                           re.IGNORECASE)
_HOUSE_AFTER = re.compile(rf"(?<![\w.,/'’-])(?P<num>\d{{1,4}})(?P<letter>[a-z])(?P<rest>\s+(?:[A-Z][a-z]+\s+)?"
                          rf"(?:{_ADDRESS})\b)")


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
    said = f"{house_number_words(m['num'])} {m['letter'].upper()}"
    return f"{m.groupdict().get('addr') or ''}{said}{m.groupdict().get('rest') or ''}"


def _house_numbers(text: str) -> str:
    text = _HOUSE_BEFORE.sub(_house, text)
    text = _HOUSE_AFTER.sub(_house, text)
    return _HOUSE_UPPER.sub(_house, text)

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
                r"AD|A\.D\.|anno|early|late|mid|spring|summer|autumn|winter")
# ... unless a plural count noun follows: "in 1984 people" is a number of people. Words ending in -s that
# are no plural nouns do not count ("in 1984 was", "by 1850 his").
_NOT_PLURAL = r"was|is|has|as|his|its|this|thus|us|yes|whereas|always|perhaps|unless|less|towards|afterwards"
_COUNTED = (rf"\s+(?:(?!(?:{_NOT_PLURAL})\b)[a-z]+s|people|men|women|children|feet|teeth|geese|mice|sheep|"
            r"deer|fish|head|more|other|others|million|thousand)\b")
_PROSE_YEAR = re.compile(rf"\b(?P<before>(?:{_YEAR_BEFORE}))(?P<space>\s+)(?P<year>1\d\d\d|20\d\d)\b"
                         rf"(?![.,]\d)(?!{_COUNTED})", re.IGNORECASE)


def prose_years(text: str) -> str:
    """Four-digit years in running prose as years ("in nineteen eighty-four"); see `_YEAR_BEFORE`."""
    def year(m: re.Match[str]) -> str:
        before = "A D" if m["before"].upper().replace(".", "") == "AD" else m["before"]
        return f"{before}{m['space']}{words(int(m['year']), to='year')}"

    return _PROSE_YEAR.sub(year, text)

# -------------------------------------------------------------------------------------- Roman numerals

# Words a Roman numeral counts after: "Chapter XIV", "Book II", "Part IV", "World War II".
_SECTION_WORDS = r"Chapter|Book|Part|Volume|Vol\.|Act|Scene|Canto|Stave|Section|Psalm|Appendix|Article|World War"
_SECTION = re.compile(rf"\b(?P<label>{_SECTION_WORDS})(?P<space>\s+)(?P<num>[IVXLCDM]+|[ivxlcdm]{{2,}})"
                      r"\b(?!['’]\w)", re.IGNORECASE)
# Names of monarchs and popes that take a regnal number: "Henry VIII", "Louis XIV", "Pius X".
_REGNAL_NAMES = ("Henry|Edward|George|William|Richard|James|Charles|Louis|Elizabeth|Mary|Anne|Victoria|John|"
                 "Philip|Peter|Catherine|Frederick|Napoleon|Pius|Leo|Gregory|Benedict|Innocent|Clement|Boniface|"
                 "Urban|Alexander|Nicholas|Ferdinand|Alfonso|Carlos|Gustav|Gustavus|Henri|Francis|Otto|Wilhelm|"
                 "Friedrich|Ivan|Ramesses|Rameses|Ptolemy|Constantine|Harold|Edmund|Stephen|Robert|David|Paul")
# "I" after a name is the pronoun unless what follows says otherwise ("Charles I was", "Charles I of",
# "Charles I." but not "Henry I said").
_AFTER_FIRST = r"(?=\s*$|\s*[^\w\s]|\s+(?:of|and|was|had|became|died|reigned|ruled|succeeded|married)\b|\s+[A-Z])"
_REGNAL = re.compile(rf"\b(?P<name>{_REGNAL_NAMES})(?P<space>\s+)(?P<num>(?:I{_AFTER_FIRST})|[IVXLC]{{2,}}|[VXLC])"
                     r"\b(?!['’]\w)")


def _roman(numeral: str) -> int | None:
    try:
        return int(roman.fromRoman(numeral.upper()))
    except roman.InvalidRomanNumeralError:
        return None


def _capitalized(said: str) -> str:
    return said[:1].upper() + said[1:]


def _section(m: re.Match[str]) -> str:
    label = m["label"]
    if m["num"] == "I" and not label[0].isupper():  # "part I think": the pronoun
        return m[0]
    value = _roman(m["num"])
    return m[0] if value is None else f"{label}{m['space']}{_capitalized(words(value))}"


def _regnal(m: re.Match[str]) -> str:
    value = _roman(m["num"])
    return m[0] if value is None else f"{m['name']}{m['space']}the {_capitalized(words(value, to='ordinal'))}"


def _roman_numerals(text: str) -> str:
    return _REGNAL.sub(_regnal, _SECTION.sub(_section, text))


def book_readings(text: str) -> str:
    """Roman numerals, fractions and house numbers read as a narrator reads them (years: `prose_years`,
    which runs later, after dates and ordinals)."""
    return _house_numbers(_fractions(_roman_numerals(text)))
