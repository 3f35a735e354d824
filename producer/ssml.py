"""A subset of SSML 1.1 turned into the text ttsfleet speaks (pauses as its break marks, phonemes as
Piper's `[[ ]]` escape). Parsed with the standard library's XML parser (expat), which reports the line
and column of malformed input; entities are never expanded beyond XML's own five, and DTDs are refused.

Supported: `speak`, `p`, `s`, `break` (time, strength), `sub` (alias), `say-as` (characters/spell-out,
cardinal, ordinal, date, telephone), `phoneme` (IPA, given to the voice as Piper phonemes),
`prosody rate` and `voice name` (for the whole document, or spans of it: `SsmlDocument.spans`). Any other
tag is a warning and its text is spoken. Whitespace inside the markup is collapsed: only `p`, `s` and
`break` make pauses.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import IntEnum

from num2words import num2words

from producer.chunks import HEADING_END, LINE_BREAK
from schemas.errors import InvalidInput

__all__ = ["SsmlDocument", "SsmlSpan", "is_ssml", "parse_ssml"]

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.75}


class Pause(IntEnum):
    """Pauses ttsfleet has, weakest first (the break kinds of `producer.chunks`, see docs/text.md)."""

    NONE = 0
    LINE = 1  # 0.25 s
    PARAGRAPH = 2  # 0.8 s
    HEADING = 3  # 1.2 s
    CHAPTER = 4  # 2.0 s


_PAUSE_TEXT = {Pause.LINE: LINE_BREAK, Pause.PARAGRAPH: "\n\n", Pause.HEADING: HEADING_END, Pause.CHAPTER: "\n\n\n"}
_STRENGTH = {"none": Pause.NONE, "x-weak": Pause.LINE, "weak": Pause.LINE, "medium": Pause.LINE,
             "strong": Pause.PARAGRAPH, "x-strong": Pause.CHAPTER}


@dataclass(frozen=True, slots=True)
class SsmlSpan:
    """A stretch of the spoken text said in one voice at one rate (None: the document's, else the job's).
    A pause between two spans rides at the end of the first as its mark; whitespace around it is kept."""

    text: str
    voice: str | None = None
    speed: float | None = None


@dataclass
class SsmlDocument:
    """What an SSML document says: the text (with break marks and `[[ ]]` phonemes), the speed and voice
    it asks for as a whole (None: the job's own), one-line warnings (unknown tags and the like), and the
    text cut where a voice or rate changes inside the document (`spans`: one span when none does; a
    whole-document voice or rate is in `voice`/`speed`, not in the spans)."""

    text: str = ""
    speed: float | None = None
    voice: str | None = None
    warnings: list[str] = field(default_factory=list)
    spans: list[SsmlSpan] = field(default_factory=list)


def is_ssml(text: str) -> bool:
    """True when `text` is an SSML document: it starts (after any BOM, XML declaration or space) with `<speak`."""
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith("<?xml"):
        head = head[head.find("?>") + 2:].lstrip() if "?>" in head else head
    return head.startswith("<speak")


def parse_ssml(source: str, where: str, language: str = "en") -> SsmlDocument:
    """The document's spoken text, whole-document settings, and spans of other voices and rates.

    Raises:
        InvalidInput: malformed XML (`where:LINE:COLUMN: ...`), a root other than `<speak>`, a DTD or
            entity declaration, or a value out of range (`break time`, `prosody rate`).
    """
    if "<!DOCTYPE" in source or "<!ENTITY" in source:
        raise InvalidInput(f"{where}: SSML with a DTD or entity declarations is refused")
    try:
        root = ET.fromstring(source.lstrip("\ufeff"))
    except ET.ParseError as err:
        line, column = err.position
        raise InvalidInput(f"{where}:{line}:{column + 1}: malformed SSML: {_reason(err)}") from err
    if _local(root.tag) != "speak":
        raise InvalidInput(f"{where}: the SSML root element must be <speak>, found <{_local(root.tag)}>")
    walker = _Walker(where, language)
    walker.children(root)
    doc = SsmlDocument(text=walker.render(), warnings=walker.warnings)
    speed = walker.single("rate")
    doc.speed = None if speed is None else float(str(speed))
    voice = walker.single("voice")
    doc.voice = None if voice is None else str(voice)
    doc.spans = walker.spans(whole_voice=voice is not None, whole_rate=speed is not None)
    return doc


def _reason(err: ET.ParseError) -> str:
    return re.sub(r":\s*line \d+, column \d+$", "", str(err))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # "{http://www.w3.org/2001/10/synthesis}speak" -> "speak"


class _Walker:
    """Walks the element tree once, collecting text pieces and pauses, and what each piece was said with."""

    def __init__(self, where: str, language: str) -> None:
        self.where, self.language = where, language
        self.pieces: list[str | Pause] = []
        self.keys: list[tuple[object, object]] = []  # per piece: the (voice, rate) it was said with
        self.warnings: list[str] = []
        self.settings: dict[str, list[object]] = {"rate": [], "voice": []}
        self._current: dict[str, object] = {"rate": None, "voice": None}
        self._unknown: set[str] = set()

    def children(self, element: ET.Element) -> None:
        self.text(element.text)
        for child in element:
            self.element(child)
            self.text(child.tail)

    def text(self, text: str | None) -> None:
        if text:
            self.pieces.append(re.sub(r"\s+", " ", text))
            self.keys.append((self._current["voice"], self._current["rate"]))
            if text.strip():
                for key, value in self._current.items():
                    self.settings[key].append(value)

    def pause(self, pause: Pause) -> None:
        self.pieces.append(pause)
        self.keys.append((None, None))  # a pause has no voice: it rides on the text before it

    def element(self, el: ET.Element) -> None:
        tag = _local(el.tag)
        if tag == "break":
            self.pause(self._break(el))
        elif tag in ("p", "s"):
            self.pause(Pause.PARAGRAPH if tag == "p" else Pause.LINE)
            self.children(el)
            self.pause(Pause.PARAGRAPH if tag == "p" else Pause.LINE)
        elif tag == "sub":
            self.text(el.get("alias", "".join(el.itertext())))
        elif tag == "say-as":
            self.text(self._say_as(el))
        elif tag == "phoneme":
            self._phoneme(el)
        elif tag in ("prosody", "voice"):
            self._scoped(el, "rate" if tag == "prosody" else "voice")
        else:
            if tag not in self._unknown:
                self._unknown.add(tag)
                self.warnings.append(f"SSML tag <{tag}> is not supported: its text is spoken as it is")
            self.children(el)

    def _scoped(self, el: ET.Element, key: str) -> None:
        value: object = None
        if key == "rate" and el.get("rate") is not None:
            value = _rate(str(el.get("rate")), self.where)
        elif key == "voice":
            value = el.get("name")
        for attribute in sorted(set(el.attrib) - {"rate", "name"}):
            self.warnings.append(f"SSML <{_local(el.tag)} {attribute}> is not supported: ignored")
        saved = self._current[key]
        if value is not None:
            self._current[key] = value
        self.children(el)
        self._current[key] = saved

    def _break(self, el: ET.Element) -> Pause:
        time_s = el.get("time")
        if time_s is not None:
            seconds = _seconds(time_s, self.where)
            if seconds <= 0.05:
                return Pause.NONE
            return Pause.LINE if seconds <= 0.5 else Pause.PARAGRAPH if seconds <= 1.0 else \
                Pause.HEADING if seconds <= 1.6 else Pause.CHAPTER
        strength = el.get("strength", "medium")
        if strength not in _STRENGTH:
            raise InvalidInput(f"{self.where}: <break strength=\"{strength}\">: use one of {', '.join(_STRENGTH)}")
        return _STRENGTH[strength]

    def _phoneme(self, el: ET.Element) -> None:
        alphabet, ph = el.get("alphabet", "ipa"), el.get("ph")
        if alphabet.lower() not in ("ipa", "piper") or not ph or "]]" in ph or "[[" in ph:
            self.warnings.append(f"SSML <phoneme alphabet=\"{alphabet}\"> is not supported (IPA only): "
                                 "its text is spoken")
            self.children(el)
            return
        self.text(f" [[ {ph.strip()} ]] ")

    def _say_as(self, el: ET.Element) -> str:
        content = "".join(el.itertext()).strip()
        kind = el.get("interpret-as", "")
        try:
            return _SAY_AS[kind](content, self.language, el.get("format"))
        except KeyError:
            self.warnings.append(f"SSML <say-as interpret-as=\"{kind}\"> is not supported: its text is spoken")
        except (ValueError, OverflowError, NotImplementedError):
            self.warnings.append(f"SSML <say-as interpret-as=\"{kind}\">{content}</say-as> could not be read "
                                 "that way: its text is spoken")
        return content

    def single(self, key: str) -> object:
        """The one value `key` had over all spoken text, or None (none, or it changes midway: spans)."""
        distinct = list(dict.fromkeys(self.settings[key]))
        return distinct[0] if len(distinct) == 1 else None

    def spans(self, *, whole_voice: bool, whole_rate: bool) -> list[SsmlSpan]:
        """The rendered text cut where the voice or rate changes (a setting that covers the whole document
        is left out: it is the document's). Pauses as `render` makes them; each pause and any whitespace
        ride on the span before them, so every span starts with the first piece said in its voice and rate."""
        parts: list[tuple[tuple[object, object], list[str]]] = []
        pending = Pause.NONE
        for piece, (voice, rate) in zip(self.pieces, self.keys, strict=True):
            if isinstance(piece, Pause):
                pending = max(pending, piece)
                continue
            if not piece.strip():
                if parts:
                    parts[-1][1].append(piece)
                continue
            if pending and parts:
                parts[-1][1].append(_PAUSE_TEXT[pending])
            pending = Pause.NONE
            key = (None if whole_voice else voice, None if whole_rate else rate)
            if parts and parts[-1][0] == key:
                parts[-1][1].append(piece)
            else:
                parts.append((key, [piece]))
        spans = [SsmlSpan(_tidy("".join(texts)), None if voice is None else str(voice),
                          None if rate is None else float(str(rate))) for (voice, rate), texts in parts]
        return spans if len(spans) > 1 else [SsmlSpan(self.render())] if spans else []

    def render(self) -> str:
        """Pieces joined; runs of pauses become the strongest of them; none at the ends."""
        out: list[str] = []
        pending = Pause.NONE
        for piece in self.pieces:
            if isinstance(piece, Pause):
                pending = max(pending, piece)
                continue
            if pending and out and piece.strip():
                out.append(_PAUSE_TEXT[pending])
                pending = Pause.NONE
            elif not out and not piece.strip():
                continue
            out.append(piece)
        return _tidy("".join(out)).strip()


def _tidy(text: str) -> str:
    """No spaces around line and paragraph marks."""
    return re.sub(r" *([\n\u2028\u2029]+) *", r"\1", text)


def _seconds(value: str, where: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", value)
    if m is None:
        raise InvalidInput(f"{where}: <break time=\"{value}\">: write a duration such as 500ms or 1.5s")
    seconds = float(m[1]) / (1000 if m[2] == "ms" else 1)
    if seconds > 10:
        raise InvalidInput(f"{where}: <break time=\"{value}\">: at most 10 s")
    return seconds


def _rate(value: str, where: str) -> float:
    """A prosody rate as a speed factor: a name, a percentage (150% = 1.5) or a number."""
    if value in _RATES:
        return _RATES[value]
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", value)
    speed = float(m[1]) / (100 if m[2] else 1) if m else 0.0
    if not 0.25 <= speed <= 4.0:
        raise InvalidInput(f"{where}: <prosody rate=\"{value}\">: use x-slow..x-fast or 25%..400%")
    return speed


def _lang(language: str) -> str:
    return language.replace("-", "_").split("_")[0] or "en"


def _characters(content: str, language: str, _format: str | None) -> str:
    return " ".join(ch for ch in content if not ch.isspace())


def _cardinal(content: str, language: str, _format: str | None) -> str:
    return str(num2words(int(content.replace(",", "")), lang=_lang(language)))


def _ordinal(content: str, language: str, _format: str | None) -> str:
    digits = re.sub(r"(st|nd|rd|th|\.)$", "", content.replace(",", ""))
    return str(num2words(int(digits), lang=_lang(language), to="ordinal"))


def _telephone(content: str, language: str, _format: str | None) -> str:
    """Digits one by one, groups separated by commas ("555-0199" -> "five five five, zero one nine nine")."""
    groups = re.findall(r"\d+", content)
    if not groups:
        raise ValueError("no digits")
    plus = "plus " if content.strip().startswith("+") else ""
    return plus + ", ".join(" ".join(num2words(int(d), lang=_lang(language)) for d in g) for g in groups)


def _date(content: str, language: str, fmt: str | None) -> str:
    """`format` is an order of d, m, y (default mdy; ymd when the first number has four digits)."""
    parts = [int(p) for p in re.findall(r"\d+", content)]
    order = (fmt or ("ymd" if re.match(r"\s*\d{4}", content) else "mdy"))[: len(parts)]
    if len(parts) != len(order) or not parts or set(order) - set("dmy"):
        raise ValueError("date does not match its format")
    value = dict(zip(order, parts, strict=True))
    lang = _lang(language)
    words = []
    if "m" in value:
        if not 1 <= value["m"] <= 12:
            raise ValueError("month out of range")
        words.append(_MONTHS[value["m"] - 1] if lang == "en" else str(num2words(value["m"], lang=lang)))
    if "d" in value:
        if not 1 <= value["d"] <= 31:
            raise ValueError("day out of range")
        words.append(str(num2words(value["d"], lang=lang, to="ordinal")))
    if "y" in value:
        words.append(str(num2words(value["y"], lang=lang, to="year")))
    return " ".join(words[:2]) + (", " + words[2] if len(words) == 3 else "")


_SAY_AS = {"characters": _characters, "spell-out": _characters, "cardinal": _cardinal, "number": _cardinal,
           "ordinal": _ordinal, "date": _date, "telephone": _telephone}
