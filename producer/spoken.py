"""What a job says, chunk by chunk: SSML read, text normalized, the lexicon applied, chunks cut.

One function, used by `submit` and by `rerender`, so a re-rendered job's chunks are cut exactly as a new
submission of the same text and lexicon would be (the rerender diff depends on it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from producer.chunks import TextChunk, split_chunks
from producer.lexicon import PHONEME_BLOCK, Lexicon, vowelless_words
from producer.ssml import is_ssml, parse_ssml
from producer.text import normalize

# A phoneme block is set aside while the text is normalized (which would drop IPA symbols as
# unspeakable) and put back after: a placeholder of ASCII letters that no normalization rule touches.
_PLACEHOLDER = re.compile(r"zqph([a-j]+)qz")


@dataclass(frozen=True, slots=True)
class Spoken:
    """A job's spoken chunks (stripped, non-empty), its warnings, its normalized length, and what an SSML
    document asked for as a whole (None: nothing)."""

    chunks: list[TextChunk]
    warnings: list[str]
    chars: int
    speed: float | None = None
    voice: str | None = None


def spoken_chunks(text: str, *, language: str, lexicon: Lexicon, max_chunk_chars: int, where: str) -> Spoken:
    """Chunks of `text` (plain or SSML) as the voice will say them.

    Raises:
        InvalidInput: malformed SSML or an SSML value out of range (one line, with line and column).
    """
    speed = voice = None
    warnings: list[str] = []
    if is_ssml(text):
        doc = parse_ssml(text, where, language)
        text, speed, voice, warnings = doc.text, doc.speed, doc.voice, list(doc.warnings)
    normalized = _normalize_around_phonemes(text, language)
    warnings += normalized[1]
    applied = lexicon.apply(normalized[0])
    if applied.unused:
        warnings.append("lexicon entries that match no word of this job: " + ", ".join(applied.unused))
    if language.lower().startswith("en"):
        spelled = vowelless_words(applied.text, lexicon)
        if spelled:
            warnings.append("words without a vowel, which the voice spells letter by letter (add them to a "
                            "lexicon to say them otherwise): " + ", ".join(spelled[:20])
                            + (f" and {len(spelled) - 20} more" if len(spelled) > 20 else ""))
    chunks = _phoneme_blocks_whole([TextChunk(c.text.strip(), c.break_after)
                                    for c in split_chunks(applied.text, max_chunk_chars) if c.text.strip()])
    return Spoken(chunks=chunks, warnings=warnings, chars=len(applied.text), speed=speed, voice=voice)


def _phoneme_blocks_whole(chunks: list[TextChunk]) -> list[TextChunk]:
    """A `[[ ]]` block cut by the length cap (a long sentence cut at a space inside it) is joined back: a
    chunk may then run over the cap by the rest of the block, but the voice gets the phonemes whole."""
    out: list[TextChunk] = []
    for chunk in chunks:
        if out and PHONEME_BLOCK.sub("", out[-1].text).count("[[") > 0:
            out[-1] = TextChunk(f"{out[-1].text} {chunk.text}", chunk.break_after)
        else:
            out.append(chunk)
    return out


def _normalize_around_phonemes(text: str, language: str) -> tuple[str, list[str]]:
    blocks: list[str] = []

    def park(m: re.Match[str]) -> str:
        blocks.append(m[0])
        return " zqph" + "".join("abcdefghij"[int(d)] for d in str(len(blocks) - 1)) + "qz "

    normalized = normalize(PHONEME_BLOCK.sub(park, text), language)

    def restore(m: re.Match[str]) -> str:
        index = int("".join(str("abcdefghij".index(c)) for c in m[1]))
        return blocks[index] if index < len(blocks) else m[0]

    return _PLACEHOLDER.sub(restore, normalized.text), list(normalized.warnings)
