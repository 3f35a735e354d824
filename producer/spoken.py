"""What a job says, chunk by chunk: SSML read, text normalized, the lexicon applied, chunks cut.

One function, used by `submit` and by `rerender`, so a re-rendered job's chunks are cut exactly as a new
submission of the same text and lexicon would be (the rerender diff depends on it).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

from producer.chunks import MIN_CHUNK_CHARS, TextChunk, gap_break, split_chunks
from producer.lexicon import PHONEME_BLOCK, Lexicon, lexicon_line_hint, vowelless_words
from producer.ssml import SsmlSpan, is_ssml, parse_ssml
from producer.text import PIECE_END, normalize, written_form

# A phoneme block is set aside while the text is normalized (which would drop IPA symbols as
# unspeakable) and put back after: a placeholder of ASCII letters that no normalization rule touches.
_PLACEHOLDER = re.compile(r"zqph([a-j]+)qz")


@dataclass(frozen=True, slots=True)
class Spoken:
    """A job's spoken chunks (stripped, non-empty), its warnings, its normalized length, what an SSML
    document asked for as a whole (None: nothing), per chunk the voice and speed factor of the SSML
    span it comes from (`voices`, `speeds`: one per chunk, None for the job's; empty: all the job's) and
    the written text it says (`written`)."""

    chunks: list[TextChunk]
    warnings: list[str]
    chars: int
    speed: float | None = None
    voice: str | None = None
    voices: tuple[str | None, ...] = ()
    speeds: tuple[float | None, ...] = ()
    # Per chunk, the written text it says, for subtitles: None where it is the spoken text, "" where the
    # chunk goes on saying the written text of the chunk before it; empty: not known (spoken text).
    written: tuple[str | None, ...] = ()


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
    written: list[str | None] = []
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
        written += one.written
    multi = len(spans) > 1
    return Spoken(chunks=chunks, warnings=warnings, chars=sum(len(s.text) for s in said) + max(len(said) - 1, 0),
                  speed=speed, voice=voice, voices=tuple(voices) if multi else (),
                  speeds=tuple(speeds) if multi else (),
                  written=tuple(written) if any(w is not None for w in written) else ())


@dataclass(frozen=True, slots=True)
class _Said:
    """One span as its voice says it: its chunks, the text they make, the lexicon's entries it did not
    use, its vowelless words (English), its normalization warnings and per chunk its written text."""

    chunks: list[TextChunk]
    text: str
    unused: list[str]
    spelled: list[str]
    warnings: list[str]
    written: list[str | None]


def _say(span: SsmlSpan, language: str, lexicon: Lexicon, max_chunk_chars: int) -> _Said:
    """The span normalized with its written sentences marked, so each spoken chunk knows the written text
    it says; the marks change nothing the voice says."""
    pieces = _written_pieces(span.text)
    normalized, warnings = _normalize_around_phonemes(PIECE_END.join(pieces), language)
    applied = lexicon.apply(normalized)
    parts = applied.text.split(PIECE_END)
    text = "".join(parts)
    spelled = vowelless_words(text, lexicon) if language.lower().startswith("en") else []
    cut = split_chunks(text, max_chunk_chars)
    written = _written_of(cut, parts, pieces)
    kept = [(TextChunk(c.text.strip(), c.break_after), w) for c, w in zip(cut, written, strict=True) if c.text.strip()]
    chunks, texts = _phoneme_blocks_whole([c for c, _ in kept], [w for _, w in kept])
    return _Said(chunks, text, applied.unused, spelled, warnings,
                 [None if w == c.text else w for c, w in zip(chunks, texts, strict=True)])


def _written_pieces(text: str) -> list[str]:
    """The written text cut into sentences, as the spoken text is: marks go only where a sentence ends,
    which no reading rule reaches across (a cut inside a sentence could split "2 1/2" or "of 1775")."""
    shown = written_form(text.replace(PIECE_END, "\ufffd"))
    return [c.text for c in split_chunks(shown, max(len(shown), MIN_CHUNK_CHARS))] if shown else []


def _written_of(cut: list[TextChunk], parts: list[str], pieces: list[str]) -> list[str]:
    """Per chunk of the spoken text, its written text: the sentences that start in it, shared out over
    the chunks that go on saying them (a long sentence cut at the cap, `_shared`); "" for a chunk whose
    share is no word (it goes on with the one before). `parts`: the spoken text of each piece, in order."""
    if not cut:
        return []
    if len(parts) != len(pieces):  # a mark lost (never seen): the spoken text stands for the written
        return [c.text for c in cut]
    chunk_starts = list(itertools.accumulate((len(c.text) for c in cut[:-1]), initial=0))
    owned: list[list[str]] = [[] for _ in cut]
    for piece, start in zip(pieces, itertools.accumulate((len(p) for p in parts[:-1]), initial=0), strict=True):
        owned[max(bisect.bisect_right(chunk_starts, start) - 1, 0)].append(piece)
    written: list[str] = []
    first = 0
    while first < len(cut):
        end = next((k for k in range(first + 1, len(cut)) if owned[k]), len(cut))
        written += _shared(" ".join(owned[first]).split(), [c.text for c in cut[first:end]])
        first = end
    return written


_KEY = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_ANCHOR_WINDOW = 60  # spoken words a written word is looked for in (a number's words run to a few dozen)


def _key(word: str) -> str | None:
    """A written or spoken word as it is compared: its letters, lower case; None for a number or symbol."""
    core = word.strip(".,;:!?\"“”‘'()[]…—–-")
    return core.lower() if _KEY.fullmatch(core) else None


def _shared(words: list[str], spoken: list[str]) -> list[str]:
    """`words` (written) shared out over the chunks `spoken` that say them, in order: a word the voice
    says as written ("things") goes to the chunk that says it; anything else (a number, an abbreviation)
    to the chunk of the word before it, so "1,234,567" is shown with the chunk where its words begin."""
    if len(spoken) == 1:
        return [" ".join(words)]
    said = [(_key(word), k) for k, text in enumerate(spoken) for word in text.split()]
    shares: list[list[str]] = [[] for _ in spoken]
    chunk, at = 0, 0
    for word in words:
        key = _key(word)
        if key is not None:
            found = next((i for i in range(at, min(at + _ANCHOR_WINDOW, len(said))) if said[i][0] == key), None)
            if found is not None:
                chunk, at = said[found][1], found + 1
        shares[chunk].append(word)
    return [" ".join(share) for share in shares]


def _phoneme_blocks_whole(chunks: list[TextChunk], written: list[str]) -> tuple[list[TextChunk], list[str]]:
    """A `[[ ]]` block cut by the length cap (a long sentence cut at a space inside it) is joined back: a
    chunk may then run over the cap by the rest of the block, but the voice gets the phonemes whole."""
    out: list[TextChunk] = []
    texts: list[str] = []
    for chunk, shown in zip(chunks, written, strict=True):
        if out and PHONEME_BLOCK.sub("", out[-1].text).count("[[") > 0:
            out[-1] = TextChunk(f"{out[-1].text} {chunk.text}", chunk.break_after)
            texts[-1] = " ".join(filter(None, [texts[-1], shown]))
        else:
            out.append(chunk)
            texts.append(shown)
    return out, texts


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
