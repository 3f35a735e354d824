"""Cutting normalized text into sentence-aligned chunks, each with the pause kind that follows it.

Whitespace is structure: one blank line (two newlines) is a paragraph break, two or more blank lines
(three newlines) a chapter break. Two invisible Unicode separators carry what books add (they are
whitespace, so no chunk's stripped text ever contains one):

- `LINE_BREAK` (U+2028 LINE SEPARATOR): a line break inside a paragraph that is read as a short pause,
  such as the end of a verse line. A plain newline inside a paragraph is only a space.
- `HEADING_END` (U+2029 PARAGRAPH SEPARATOR): the end of a heading; a heading pause follows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import regex

from schemas.status import BreakKind

__all__ = ["HEADING_END", "LINE_BREAK", "MIN_CHUNK_CHARS", "TextChunk", "gap_break", "split_chunks"]

MIN_CHUNK_CHARS = 16  # below this a hard cap cannot keep whitespace attached to words
LINE_BREAK = "\u2028"
HEADING_END = "\u2029"


@dataclass(frozen=True, slots=True)
class TextChunk:
    """An exact slice of the normalized text and the pause kind that follows it."""

    text: str
    break_after: BreakKind


_CLOSERS = "\"'”’»)]}」』）】》〉"
# A candidate sentence end: Western terminal punctuation then closers, or CJK terminal punctuation.
_WESTERN_END = re.compile(rf"[.!?…‽]+[{re.escape(_CLOSERS)}]*")
_CJK_END = re.compile(rf"[。！？；｡]+[{re.escape(_CLOSERS)}]*")
# Words after which a full stop usually does not end the sentence.
_NO_BREAK_AFTER = {"mr", "mrs", "ms", "dr", "st", "prof", "mt", "no", "jr", "sr", "vs", "e.g", "i.e", "cf"}
# Western clause marks need the space after them; CJK ones are written without one.
_CLAUSE_CUT = re.compile(r"[,;:—–]\s+|[、，；：]\s*")
_SPACES = re.compile(r"\s*")
_WHITESPACE = re.compile(r"\s+")
_BLANK_LINE = re.compile(r"[^\S\n]*\n\s*\n")
_MARK = re.compile(f"[{LINE_BREAK}{HEADING_END}]")
# A user-perceived character (Unicode extended grapheme cluster); the stdlib `re` has no `\X`.
_GRAPHEME = regex.compile(r"\X")


def split_chunks(text: str, max_chars: int) -> list[TextChunk]:
    """Cut `text` into chunks of at most `max_chars` characters, one sentence each where it fits.

    Guarantees: `"".join(c.text for c in chunks) == text`; no chunk is empty or whitespace-only
    (whitespace rides on the chunk before it); `break_after` is CHAPTER / PARAGRAPH / SENTENCE from the
    whitespace that follows (3+ / 2 newlines / other), HEADING after `HEADING_END`, LINE after
    `LINE_BREAK`, NONE where a long sentence was cut. The last chunk's break is SENTENCE. Text with
    nothing but whitespace gives [].

    Raises:
        ValueError: `max_chars` < 16, or a whitespace run longer than `max_chars // 4` (normalize first).
    """
    if max_chars < MIN_CHUNK_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_CHUNK_CHARS}, got {max_chars}")
    if not text.strip():
        return []
    if re.search(rf"\s{{{max_chars // 4 + 1}}}", text):  # found by the regex engine, not a Python loop
        longest_ws = max(len(m[0]) for m in re.finditer(r"\s+", text))
        raise ValueError(f"whitespace run of {longest_ws} characters exceeds max_chars // 4; normalize first")
    chunks: list[TextChunk] = []
    for unit in _sentence_units(text):
        pieces = _cut(unit, max_chars)
        chunks += [TextChunk(p, BreakKind.NONE) for p in pieces[:-1]]
        chunks.append(TextChunk(pieces[-1], _break_kind(pieces[-1])))
    chunks[-1] = TextChunk(chunks[-1].text, BreakKind.SENTENCE)
    return chunks


def gap_break(said: str, gap: str) -> BreakKind:
    """The pause after `said` when whitespace `gap` follows it: as `split_chunks` reads a chunk's trailing
    whitespace, except that text without terminal punctuation before plain spaces (a sentence that goes
    on) has none."""
    kind = _break_kind(said.rstrip() + gap)
    if kind == BreakKind.SENTENCE and not re.search(r"[.!?…。！？][\"”“»«')\]]*$", said.rstrip()):
        return BreakKind.NONE
    return kind


def _break_kind(unit: str) -> BreakKind:
    tail = unit[len(unit.rstrip()):]
    newlines = tail.count("\n")
    if newlines >= 3:
        return BreakKind.CHAPTER
    if HEADING_END in tail:
        return BreakKind.HEADING
    if newlines == 2:
        return BreakKind.PARAGRAPH
    if LINE_BREAK in tail:
        return BreakKind.LINE
    return BreakKind.SENTENCE


def _sentence_units(text: str) -> list[str]:
    """Sentences with their trailing whitespace; leading whitespace of `text` joins the first one.

    Linear in len(text): every test looks at a bounded window around a match, never at a suffix copy.
    """
    ends = {m.end() for m in _CJK_END.finditer(text)}
    ends |= {m.end() for m in _WESTERN_END.finditer(text) if _is_western_end(text, m)}
    ends |= {m.start() for m in _BLANK_LINE.finditer(text)}
    ends |= {m.start() for m in _MARK.finditer(text)}
    units: list[str] = []
    start = 0
    for end in sorted(ends):
        stop = _SPACES.match(text, end).end()  # type: ignore[union-attr]  # \s* always matches
        if stop > start and not _SPACES.fullmatch(text, start, end):
            units.append(text[start:stop])
            start = stop
    if start < len(text):
        if not _SPACES.fullmatch(text, start) or not units:
            units.append(text[start:])
        else:
            units[-1] += text[start:]
    return units


def _is_western_end(text: str, m: re.Match[str]) -> bool:
    after = _SPACES.match(text, m.end()).end()  # type: ignore[union-attr]
    if after == len(text):
        return True
    if after == m.end() or text[after].islower() or text[after].isdigit():
        return False
    if m[0] == ".":
        word = re.search(r"(\S+)$", text[max(0, m.start() - 12): m.start()])
        token = word[1].lower().lstrip(_CLOSERS + "(\"'“‘") if word else ""
        if token in _NO_BREAK_AFTER or (len(token) == 1 and token.isalpha()):
            return False
    return True


def _cut(unit: str, max_chars: int) -> list[str]:
    """Split one sentence (with its trailing whitespace) into pieces of at most `max_chars`.

    Prefers a clause mark (comma, semicolon, dash) in the second half of the window, then the last
    space, then a hard cut (unpunctuated CJK, very long words) at the last grapheme-cluster boundary, so
    a letter keeps its combining marks; only a single cluster longer than the window is cut inside.
    """
    content_end = len(unit.rstrip())
    pieces: list[str] = []
    start = 0
    while len(unit) - start > max_chars:
        limit = start + max_chars
        cut = _clause_cut(unit, start, limit, content_end) or _space_cut(unit, start, limit, content_end)
        if not cut:
            cut = _cluster_cut(unit, start, min(limit, content_end - 1))
        pieces.append(unit[start:cut])
        start = cut
    pieces.append(unit[start:])
    return pieces


def _cluster_cut(unit: str, start: int, limit: int) -> int:
    """The last grapheme-cluster boundary in (start, limit], or `limit` when one cluster spans the window."""
    best = start
    for m in _GRAPHEME.finditer(unit, start):
        if m.end() > limit:
            break
        best = m.end()
    return best if best > start else limit


def _clause_cut(unit: str, start: int, limit: int, content_end: int) -> int:
    best = 0
    for m in _CLAUSE_CUT.finditer(unit, start, limit + 1):
        if (limit - start) // 2 <= m.end() - start and m.end() <= limit and m.end() < content_end:
            best = m.end()
    return best


def _space_cut(unit: str, start: int, limit: int, content_end: int) -> int:
    best = 0
    for m in _WHITESPACE.finditer(unit, start, limit + 1):
        if m.start() > start and m.end() <= limit and m.end() < content_end:
            best = m.end()
    return best
