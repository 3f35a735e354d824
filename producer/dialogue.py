"""Narrator and dialogue: text cut at its quotation marks, so quoted speech can go to a second voice.

`--voice narrator=A,dialogue=B` speaks what stands inside quotation marks with voice B and the rest
with voice A. The quotation marks recognized (opening → closing):

- `"` → `"` (straight double quotes, paired in order)
- `“` → `”` (English curly quotes; `“` → `“` too, as typed by some keyboards)
- `„` → `“` or `”` (German, Polish, Czech low-high quotes)
- `«` → `»` and `»` → `«` (French, Spanish, Russian guillemets; the reversed German/Danish order too)

Single quotes are never used: they are apostrophes far more often than quotes. A quote still open at
a paragraph's end (a blank line) closes there, as a speech running over several paragraphs reopens
its quote in each. Cutting is lossless: the spans joined give back the text, character for character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from producer.chunks import HEADING_END, TextChunk, split_chunks
from producer.text import Normalized, normalize
from schemas.errors import InvalidInput
from schemas.status import BreakKind

__all__ = ["QUOTES", "RoleChunk", "Span", "VoiceRoles", "dialogue_chunks", "parse_voice_roles", "split_dialogue"]

# opening mark -> the marks that close it
QUOTES: dict[str, str] = {'"': '"', "“": "”“", "„": "“”", "«": "»", "»": "«"}
_PARAGRAPH_END = re.compile(r"\n[^\S\n]*\n")


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of the text: `quoted` is True for speech inside quotation marks (the marks included)."""

    text: str
    quoted: bool


@dataclass(frozen=True, slots=True)
class VoiceRoles:
    """The voices of `--voice narrator=A,dialogue=B`."""

    narrator: str
    dialogue: str


def split_dialogue(text: str) -> list[Span]:
    """Cut `text` into narration and quoted speech, in order; `"".join(s.text for s in spans) == text`
    and no span is empty. Never raises."""
    spans: list[Span] = []
    start = pos = 0
    while pos < len(text):
        closers = QUOTES.get(text[pos])
        if closers is None:
            pos += 1
            continue
        end = _closing(text, pos + 1, closers)
        if pos > start:
            spans.append(Span(text[start:pos], quoted=False))
        spans.append(Span(text[pos:end], quoted=True))
        start = pos = end
    if start < len(text):
        spans.append(Span(text[start:], quoted=False))
    return spans


def _closing(text: str, pos: int, closers: str) -> int:
    """Where the quote opened before `pos` ends: after its closing mark, else at the paragraph's end
    (the blank line stays with what follows), else at the end of the text."""
    paragraph = _PARAGRAPH_END.search(text, pos)
    limit = paragraph.start() if paragraph else len(text)
    for at in range(pos, limit):
        if text[at] in closers:
            return at + 1
    return limit


@dataclass(frozen=True, slots=True)
class RoleChunk:
    """A chunk and whether the dialogue voice says it."""

    chunk: TextChunk
    dialogue: bool


def dialogue_chunks(text: str, narrator_language: str, dialogue_language: str,
                    max_chars: int) -> tuple[list[RoleChunk], Normalized]:
    """Chunks of `text` with their role: each span normalized for the language of the voice that says it
    (so a voice never reads another language's normalization) and chunked on its own. The pause after a
    span comes from the whitespace around its end (a paragraph or chapter break, a heading), else a
    sentence pause after terminal punctuation and none inside a sentence ("he said, “Yes.”").
    Returns the chunks and the spoken text they make (joined by single spaces) with every warning."""
    chunks: list[RoleChunk] = []
    said: list[str] = []
    warnings: dict[str, None] = {}
    spans = split_dialogue(text)
    for number, span in enumerate(spans):
        normalized = normalize(span.text, dialogue_language if span.quoted else narrator_language)
        warnings.update(dict.fromkeys(normalized.warnings))
        pieces = split_chunks(normalized.text, max_chars)
        if not pieces:
            continue
        gap = span.text[len(span.text.rstrip()):] + (_leading_space(spans[number + 1].text)
                                                    if number + 1 < len(spans) else "")
        last = TextChunk(pieces[-1].text, _break_after(normalized.text, gap))
        chunks += [RoleChunk(c, span.quoted) for c in [*pieces[:-1], last]]
        said.append(normalized.text)
    return chunks, Normalized(" ".join(said), list(warnings))


def _leading_space(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def _break_after(said: str, gap: str) -> BreakKind:
    newlines = gap.count("\n")
    if newlines >= 3:
        return BreakKind.CHAPTER
    if newlines == 2:
        return BreakKind.PARAGRAPH
    if HEADING_END in gap:
        return BreakKind.HEADING
    return BreakKind.SENTENCE if re.search(r"[.!?…][\"”“»«']*$", said) else BreakKind.NONE


def parse_voice_roles(value: str | None) -> VoiceRoles | None:
    """`narrator=A,dialogue=B` as VoiceRoles; None for a plain voice name (or none).

    Raises:
        InvalidInput: a role other than narrator/dialogue, a role without a voice, or one role missing.
    """
    if not value or not re.match(r"\s*(narrator|dialogue)\s*=", value):
        return None
    roles: dict[str, str] = {}
    for part in re.split(r",(?=\s*(?:narrator|dialogue)\s*=)", value):
        role, _, voice = part.partition("=")
        role = role.strip()
        if role not in ("narrator", "dialogue") or not voice.strip():
            raise InvalidInput(f"--voice {value!r}: expected narrator=VOICE,dialogue=VOICE")
        roles[role] = voice.strip()
    if set(roles) != {"narrator", "dialogue"}:
        raise InvalidInput(f"--voice {value!r}: name both roles, as narrator=VOICE,dialogue=VOICE")
    return VoiceRoles(narrator=roles["narrator"], dialogue=roles["dialogue"])
