"""Pronunciation lexicons: `WORD<TAB>REPLACEMENT` entries applied to a job's normalized text.

A REPLACEMENT is text ("Nay-sah") or Piper phonemes in `[[ ]]` ("[[ nˈæsə ]]"), which the worker's
phonemizer passes to the voice as they are (Piper's own escape). Rules:

- whole words only: an entry never matches inside a longer word ("cat" leaves "catalog" alone);
- case: an entry written all in lower case matches any case ("nasa" matches "NASA", "Nasa"); an entry
  with a capital letter matches exactly that spelling ("US" leaves "us" alone);
- the longest entry wins where two could start at the same place; replacements are never looked at
  again (no entry applies to another's output), and text already inside `[[ ]]` is left alone.

Written by hand: no maintained library applies a TTS lexicon with these rules to plain text; the
matching itself is one compiled regular expression.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import InvalidInput
from schemas.messages import MAX_LEXICON_ENTRIES as MAX_ENTRIES

PHONEME_BLOCK = re.compile(r"\[\[.*?\]\]", re.DOTALL)  # Piper's escape: `[[ phonemes ]]`
VOICE_LEXICON_FILE = "lexicon.tsv"  # a folder voice's default lexicon
_VOWELS = set("aeiouyAEIOUY")
# A word, contractions included with any apostrophe a book prints ("they’ll", "don't", "ma’amʼs"): their
# tail alone ("ll", "t") is no word of its own, and the phonemizer says the whole contraction correctly.
_WORD = re.compile(r"[^\W\d_]+(?:['’ʼ][^\W\d_]+)*")


@dataclass(frozen=True, slots=True)
class Entry:
    """One lexicon line: `word` as written (its case decides how it matches) and what is said instead."""

    word: str
    replacement: str

    @property
    def is_phonemes(self) -> bool:
        return self.replacement.startswith("[[") and self.replacement.endswith("]]")


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of the text: `source` as it was; `entry` the lexicon entry that replaced it (None: kept)."""

    source: str
    entry: Entry | None = None

    @property
    def spoken(self) -> str:
        return self.source if self.entry is None else self.entry.replacement


@dataclass(frozen=True, slots=True)
class Applied:
    """The text with the lexicon applied, and the entries that matched nothing (reported to the user)."""

    text: str
    unused: list[str]


class Lexicon:
    """Entries keyed by their word; a later entry for the same word replaces an earlier one (a job's
    lexicon over its voice's default)."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries: dict[str, Entry] = {}
        for entry in entries:
            self.entries[entry.word] = entry
        self._ordered = sorted(self.entries.values(), key=lambda e: (-len(e.word), e.word))
        self._pattern = _compile(self._ordered)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def merged(self, other: Lexicon) -> Lexicon:
        """This lexicon with `other`'s entries added, `other` winning for the same word."""
        return Lexicon([*self.entries.values(), *other.entries.values()])

    def as_pairs(self) -> list[list[str]]:
        """JSON-friendly `[[word, replacement], ...]`, sorted: how a job stores (and keys) its lexicon."""
        return sorted([e.word, e.replacement] for e in self.entries.values())

    @classmethod
    def from_pairs(cls, pairs: Sequence[Sequence[str]]) -> Lexicon:
        return cls(Entry(str(w), str(r)) for w, r in pairs)

    def spans(self, text: str) -> list[Span]:
        """`text` cut into kept and replaced pieces: `"".join(s.source for s in spans) == text`."""
        if self._pattern is None or not text:
            return [Span(text)] if text else []
        out: list[Span] = []
        start = 0
        for m in self._pattern.finditer(text):
            if m.lastgroup == "ph":  # an existing phoneme block: kept as it is
                continue
            if m.start() > start:
                out.append(Span(text[start:m.start()]))
            out.append(Span(m[0], self._entry_for(m)))
            start = m.end()
        if start < len(text):
            out.append(Span(text[start:]))
        return out

    def apply(self, text: str) -> Applied:
        """`text` with every match replaced; `unused`: the words of entries that matched nothing."""
        spans = self.spans(text)
        used = {s.entry.word for s in spans if s.entry is not None}
        return Applied("".join(s.spoken for s in spans), sorted(w for w in self.entries if w not in used))

    def _entry_for(self, m: re.Match[str]) -> Entry:
        return self._ordered[int(str(m.lastgroup)[1:])]


def _compile(entries: list[Entry]) -> re.Pattern[str] | None:
    """One alternation over `entries` (longest word first); phoneme blocks first of all, so they are
    skipped whole."""
    if not entries:
        return None
    parts = [f"(?P<ph>{PHONEME_BLOCK.pattern})"]
    for n, entry in enumerate(entries):
        body = re.escape(entry.word)
        if entry.word == entry.word.lower():
            body = f"(?i:{body})"
        before = r"(?<!\w)" if re.match(r"\w", entry.word[0]) else ""
        after = r"(?!\w)" if re.match(r"\w", entry.word[-1]) else ""
        parts.append(f"(?P<e{n}>{before}{body}{after})")
    return re.compile("|".join(parts), re.DOTALL)


def parse_lexicon(text: str, where: str) -> Lexicon:
    """Entries of a lexicon file's text; `where` names it in errors.

    Raises:
        InvalidInput: a line without a TAB, an empty word or replacement, unbalanced `[[ ]]`, or more
            than MAX_ENTRIES entries; the message names the line.
    """
    entries: list[Entry] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise InvalidInput(f"{where}:{number}: expected WORD<TAB>REPLACEMENT, found no TAB")
        word, replacement = (part.strip() for part in line.split("\t", 1))
        if not word or not replacement:
            raise InvalidInput(f"{where}:{number}: {'word' if not word else 'replacement'} is empty")
        outside = PHONEME_BLOCK.sub("", replacement)
        if "[[" in outside or "]]" in outside:
            raise InvalidInput(f"{where}:{number}: unbalanced [[ ]] in the replacement")
        entries.append(Entry(word, replacement))
    if len(entries) > MAX_ENTRIES:
        raise InvalidInput(f"{where}: {len(entries):,} entries, above the limit of {MAX_ENTRIES:,}")
    return Lexicon(entries)


def voice_lexicon(folder: Path | None) -> Lexicon:
    """A voice's default lexicon: `lexicon.tsv` in its folder (folder voices only), else an empty one.

    Raises:
        InvalidInput: the file exists but is not a valid lexicon.
    """
    if folder is None or not (folder / VOICE_LEXICON_FILE).is_file():
        return Lexicon()
    path = folder / VOICE_LEXICON_FILE
    try:
        return parse_lexicon(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"{path}: cannot read the voice's lexicon: {err}") from err


def read_lexicon_file(path: Path) -> Lexicon:
    """`--lexicon FILE`. Raises InvalidInput (missing, not UTF-8, or a bad line)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise InvalidInput(f"{path}: cannot read the lexicon: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{path}: lexicon is not valid UTF-8 at byte offset {err.start}") from err
    return parse_lexicon(text, str(path))


def vowelless_words(text: str, lexicon: Lexicon) -> list[str]:
    """Words of two or more Latin letters with no vowel (a, e, i, o, u, y) outside `[[ ]]` and not in the
    lexicon: espeak-ng spells these letter by letter ("XKCD" -> "ex kay see dee"). Sorted, unique."""
    spoken = PHONEME_BLOCK.sub(" ", text)
    known = {w.lower() for w in lexicon.entries}
    found = {w for w in _WORD.findall(spoken)
             if len(w) >= 2 and _latin(w) and not (set(w) & _VOWELS) and w.lower() not in known}
    return sorted(found)


def _latin(word: str) -> bool:
    return word.isascii() or word.replace("’", "'").replace("ʼ", "'").isascii()


def lexicon_line_hint(word: str) -> str:
    """A shell line that adds `word` to a lexicon file, ready to paste (the user then edits how it is
    said): `printf 'Pfft\\tPfft\\n' >> lexicon.tsv`."""
    return f"printf {shlex.quote(word + chr(92) + 't' + word + chr(92) + 'n')} >> lexicon.tsv"
