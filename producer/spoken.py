"""What a job says, chunk by chunk: SSML read, text normalized, the lexicon applied, chunks cut.

One function, used by `submit` and by `rerender`, so a re-rendered job's chunks are cut exactly as a new
submission of the same text and lexicon would be (the rerender diff depends on it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from producer.chunks import TextChunk, gap_break, split_chunks
from producer.lexicon import PHONEME_BLOCK, Lexicon, lexicon_line_hint, vowelless_words
from producer.ssml import SsmlSpan, is_ssml, parse_ssml
from producer.text import normalize

# A phoneme block is set aside while the text is normalized (which would drop IPA symbols as
# unspeakable) and put back after: a placeholder of ASCII letters that no normalization rule touches.
_PLACEHOLDER = re.compile(r"zqph([a-j]+)qz")


@dataclass(frozen=True, slots=True)
class Spoken:
    """A job's spoken chunks (stripped, non-empty), its warnings, its normalized length, what an SSML
    document asked for as a whole (None: nothing), and per chunk the voice and speed factor of the SSML
    span it comes from (`voices`, `speeds`: one per chunk, None for the job's; empty: all the job's)."""

    chunks: list[TextChunk]
    warnings: list[str]
    chars: int
    speed: float | None = None
    voice: str | None = None
    voices: tuple[str | None, ...] = ()
    speeds: tuple[float | None, ...] = ()


def spoken_chunks(text: str, *, language: str, lexicon: Lexicon, max_chunk_chars: int, where: str,
                  language_of: Callable[[str], str] | None = None) -> Spoken:
    """Chunks of `text` (plain or SSML) as the voice will say them. An SSML span in another voice or at
    another rate is cut on its own (no chunk straddles a change), normalized in `language_of(voice)`
    (None: `language`).

    Raises:
        InvalidInput: malformed SSML or an SSML value out of range (one line, with line and column).
        UnknownVoice: from `language_of`, for a span's voice.
    """
    speed = voice = None
    warnings: list[str] = []
    spans = [SsmlSpan(text)]
    if is_ssml(text):
        doc = parse_ssml(text, where, language)
        spans, speed, voice, warnings = doc.spans, doc.speed, doc.voice, list(doc.warnings)
    said = [_say(span, language if span.voice is None or language_of is None else language_of(span.voice),
                 lexicon, max_chunk_chars) for span in spans]
    warnings += list(dict.fromkeys(w for s in said for w in s.warnings))
    unused = set(lexicon.entries).intersection(*(s.unused for s in said)) if said else set()
    if unused:
        warnings.append("lexicon entries that match no word of this job: " + ", ".join(sorted(unused))
                        + " (check their spelling: an entry with a capital matches that spelling only, and numbers "
                        "are matched as words, 'twelve' not '12')")
    spelled = list(dict.fromkeys(w for s in said for w in s.spelled))
    if spelled:
        warnings.append("words without a vowel, which the voice spells letter by letter: " + ", ".join(spelled[:20])
                        + (f" and {len(spelled) - 20} more" if len(spelled) > 20 else "")
                        + "; to have one said as a word, add a lexicon line, edit how it is said (text or "
                        f"[[ phonemes ]]) and pass --lexicon lexicon.tsv: {lexicon_line_hint(spelled[0])}")
    chunks: list[TextChunk] = []
    voices: list[str | None] = []
    speeds: list[float | None] = []
    for n, (span, one) in enumerate(zip(spans, said, strict=True)):
        if not one.chunks:
            continue
        if n + 1 < len(spans):  # the pause after a span: from the whitespace (and marks) at its end
            gap = span.text[len(span.text.rstrip()):] + spans[n + 1].text[: len(spans[n + 1].text)
                                                                          - len(spans[n + 1].text.lstrip())]
            one.chunks[-1] = TextChunk(one.chunks[-1].text, gap_break(one.chunks[-1].text, gap))
        chunks += one.chunks
        voices += [span.voice] * len(one.chunks)
        speeds += [span.speed] * len(one.chunks)
    multi = len(spans) > 1
    return Spoken(chunks=chunks, warnings=warnings, chars=sum(len(s.text) for s in said) + max(len(said) - 1, 0),
                  speed=speed, voice=voice, voices=tuple(voices) if multi else (),
                  speeds=tuple(speeds) if multi else ())


@dataclass(frozen=True, slots=True)
class _Said:
    """One span as its voice says it: its chunks, the text they make, the lexicon's entries it did not
    use, its vowelless words (English) and its normalization warnings."""

    chunks: list[TextChunk]
    text: str
    unused: list[str]
    spelled: list[str]
    warnings: list[str]


def _say(span: SsmlSpan, language: str, lexicon: Lexicon, max_chunk_chars: int) -> _Said:
    normalized, warnings = _normalize_around_phonemes(span.text, language)
    applied = lexicon.apply(normalized)
    spelled = vowelless_words(applied.text, lexicon) if language.lower().startswith("en") else []
    chunks = _phoneme_blocks_whole([TextChunk(c.text.strip(), c.break_after)
                                    for c in split_chunks(applied.text, max_chunk_chars) if c.text.strip()])
    return _Said(chunks, applied.text, applied.unused, spelled, warnings)


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
