"""Normalization and splitting: property tests that no text is ever lost, plus the readings users hear."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from num2words import num2words

from producer import text as text_module
from producer.chunks import HEADING_END, LINE_BREAK, MIN_CHUNK_CHARS, split_chunks
from producer.text import has_speakable, normalize
from schemas.status import BreakKind

# Text that exercises the splitter: words, Western and CJK sentence ends, quotes, paragraph and
# chapter breaks, long unpunctuated runs.
_PIECES = st.sampled_from([
    "word", "Word", "x", "Dr.", "e.g.", ".", "!", "?", "…", "。", "！", "？", "；", "、", ",", ";", "—", "\"",
    "”", ")", "今日は晴れです", "é", "e\u0301", " ", " ", " ", "\n", "\n\n", "\n\n\n", "\t",
    "abcdefghijklmnopqrstuvwxyz" * 3, "3.5", "42", "$12.50", "9:30 a.m.", "2024-03-15", "1999", "😀", "☃",
])
_TEXTS = st.lists(_PIECES, max_size=60).map("".join) | st.text(max_size=300)
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_chunks(text: str, max_chars: int) -> None:
    chunks = split_chunks(text, max_chars)
    if not text.strip():
        assert chunks == []  # whitespace alone is nothing to speak, and may not form a chunk
        return
    assert "".join(c.text for c in chunks) == text
    for chunk in chunks:
        assert 0 < len(chunk.text) <= max_chars
        assert chunk.text.strip(), f"whitespace-only chunk {chunk.text!r}"
    if chunks:
        assert chunks[-1].break_after == BreakKind.SENTENCE


_ABBREVIATED = {word.lower() for word in text_module._ABBREVIATIONS}


@_FAST
@given(text=_TEXTS, max_chars=st.integers(min_value=MIN_CHUNK_CHARS, max_value=120))
def test_chunks_join_back_to_the_normalized_text(text: str, max_chars: int) -> None:
    _check_chunks(normalize(text).text, max_chars)


@_FAST
@given(text=_TEXTS, max_chars=st.integers(min_value=MIN_CHUNK_CHARS, max_value=120))
def test_chunks_join_back_to_raw_text_or_refuse_huge_whitespace(text: str, max_chars: int) -> None:
    longest_ws = max((len(m[0]) for m in re.finditer(r"\s+", text)), default=0)
    if text.strip() and longest_ws > max_chars // 4:
        with pytest.raises(ValueError, match="whitespace run"):
            split_chunks(text, max_chars)
    else:
        _check_chunks(text, max_chars)


@_FAST
@given(text=_TEXTS, language=st.sampled_from(["en", "en_US", "de", "fr", "ja", "xx"]))
def test_normalize_never_raises_and_reports_what_it_drops(text: str, language: str) -> None:
    result = normalize(text, language)
    assert result.text == result.text.strip()
    assert "\n\n\n\n" not in result.text
    assert not re.search(r"[\U0001F300-\U0001FAFF☃]", result.text)
    if any(c in text for c in "😀☃"):
        assert any("unspeakable characters dropped" in w for w in result.warnings)


@_FAST
@given(text=_TEXTS)
def test_english_normalization_leaves_no_digits(text: str) -> None:
    assert not re.search(r"\d", normalize(text, "en").text)


@_FAST
@given(words=st.lists(st.from_regex(r"[a-z]{1,12}", fullmatch=True).filter(lambda w: w not in _ABBREVIATED),
                      min_size=1, max_size=30))
def test_plain_words_are_all_kept_in_order(words: list[str]) -> None:
    # Words that are abbreviations ("vs." -> "versus.") are read out by design: test_abbreviations covers them.
    text = " ".join(words) + "."
    assert normalize(text).text == text


@_FAST
@given(number=st.integers(min_value=0, max_value=10**12))
def test_any_integer_is_read_as_its_cardinal(number: int) -> None:
    assert normalize(f"It is {number} now.").text == f"It is {num2words(number)} now."


@pytest.mark.parametrize(("raw", "spoken"), [
    ("Dr. Smith arrives at 9:30 a.m. on March 5, 2024.",
     "Doctor Smith arrives at nine thirty A M on March fifth, twenty twenty-four."),
    ("It costs $12.50, or 15% more.", "It costs twelve dollars and fifty cents, or fifteen percent more."),
    ("Fees drop to $0.25 from $1.", "Fees drop to twenty-five cents from one dollar."),
    ("The 3rd meeting is on 2024-07-04 at 14:05.",
     "The third meeting is on July fourth, twenty twenty-four at fourteen oh five."),
    ("Built in 1999, closed at 5 p.m. Then it rained.",
     "Built in nineteen ninety-nine, closed at five P M. Then it rained."),
    ("St. Mark lives on Main St.", "Saint Mark lives on Main Street."),
    ("Doors open at 7:00.", "Doors open at seven o'clock."),
    ("Call 555-1234 about pages 10–20.", "Call five five five, one two three four about pages ten to twenty."),
    ("The 1990s, e.g. music, etc.", "The nineteen nineties, for example music, et cetera."),
    ("Pay £3 million & €1.", "Pay three million pounds and one euro."),
    ("It was -5°C.", "It was minus five degrees Celsius."),
    ("On 15 March 2024 we met.", "On the fifteenth of March, twenty twenty-four we met."),
])
def test_english_readings(raw: str, spoken: str) -> None:
    result = normalize(raw)
    assert result.text == spoken
    assert result.warnings == []


def test_other_languages_get_their_number_words() -> None:
    assert normalize("Es kostet 5,5 Euro und 3 Äpfel.", "de").text == "Es kostet fünf Komma fünf Euro und drei Äpfel."
    assert normalize("第3章。", "ja").text == "第三章。"


def test_unknown_language_keeps_digits_and_warns() -> None:
    result = normalize("Room 12.", "xx")
    assert result.text == "Room 12."
    assert result.warnings == ["numbers left as digits: no number words for language 'xx' (write them as words, "
                               "or add lexicon lines such as 12<TAB>the words)"]


def test_emoji_are_dropped_with_a_warning_and_structure_kept() -> None:
    result = normalize("\ufeffHello 😀 world\r\n\r\n\r\n\r\n\r\nNext  part ☃.")
    assert result.text == "Hello world\n\n\nNext part."
    assert result.warnings == ["unspeakable characters dropped: 😀 ☃ (to have one said, write it as words in the text)"]


def test_has_speakable() -> None:
    assert not has_speakable("")
    assert not has_speakable(" \n\t ")
    assert not has_speakable("😀 👍🏽 ☃ !!")
    assert has_speakable("😀 a")
    assert has_speakable("7")


def test_sentences_paragraphs_and_chapters_are_marked() -> None:
    text = "One. Two!\n\nThree? Dr. Who came.\n\n\nChapter two. End"
    chunks = split_chunks(text, 100)
    assert [c.text for c in chunks] == ["One. ", "Two!\n\n", "Three? ", "Dr. Who came.\n\n\n", "Chapter two. ", "End"]
    assert [c.break_after for c in chunks] == [BreakKind.SENTENCE, BreakKind.PARAGRAPH, BreakKind.SENTENCE,
                                               BreakKind.CHAPTER, BreakKind.SENTENCE, BreakKind.SENTENCE]


def test_long_sentences_are_cut_at_clauses_then_spaces() -> None:
    text = "alpha beta gamma, delta epsilon zeta eta theta iota kappa lambda mu."
    chunks = split_chunks(text, 30)
    assert [c.text for c in chunks] == ["alpha beta gamma, ", "delta epsilon zeta eta theta ", "iota kappa lambda mu."]
    assert [c.break_after for c in chunks] == [BreakKind.NONE, BreakKind.NONE, BreakKind.SENTENCE]


def test_cjk_sentences_and_unpunctuated_runs() -> None:
    chunks = split_chunks("今日は晴れです。明日は雨でしょう！" + "あ" * 40, 16)
    assert [c.text for c in chunks][:2] == ["今日は晴れです。", "明日は雨でしょう！"]
    assert all(len(c.text) <= 16 for c in chunks)
    assert "".join(c.text for c in chunks[2:]) == "あ" * 40


def test_three_megabytes_of_text_are_chunked_quickly() -> None:
    paragraph = ("It was the best of times, it was the worst of times, it was the age of wisdom. " * 12).strip()
    text = "\n\n".join([paragraph] * 3200)
    assert len(text.encode()) > 3_000_000
    normalized = normalize(text)
    chunks = split_chunks(normalized.text, 400)
    assert "".join(c.text for c in chunks) == normalized.text
    assert max(len(c.text) for c in chunks) <= 400


def test_split_refuses_tiny_caps_and_returns_nothing_for_blank_text() -> None:
    with pytest.raises(ValueError, match="at least"):
        split_chunks("Hello.", 4)
    assert split_chunks("  \n ", 100) == []


def test_runs_of_combining_marks_do_not_explode_into_one_chunk_per_character() -> None:
    # Long runs of combining marks (Zalgo text) once gave one chunk per character: the hard cut stepped
    # back over the marks to the start of the window. Now cuts fall between grapheme clusters, and
    # inside a cluster only when one cluster alone is longer than the cap.
    text = "Warning: z" + "\u0301\u0323\u0308" * 200 + " and " + ("o" + "\u0308" * 50) * 3 + " end."
    assert len(text) == 773
    for max_chars in (400, 100):
        chunks = split_chunks(text, max_chars)
        assert "".join(c.text for c in chunks) == text
        assert all(len(c.text) <= max_chars for c in chunks)
        assert len(chunks) <= len(text) // max_chars + 4, (max_chars, len(chunks))
    word = ("a" + "\u0301" * 4) * 100  # no space to cut at: cut between clusters, never inside one
    pieces = split_chunks(word, 64)
    assert "".join(c.text for c in pieces) == word and len(pieces) <= len(word) // 60 + 1
    assert all(not unicodedata.combining(c.text[0]) for c in pieces)


def test_heading_and_line_marks_become_pauses_and_survive_normalize() -> None:
    text = f"Chapter 3{HEADING_END}\n\nRoses are red,  {LINE_BREAK} violets are blue.\nSugar is sweet."
    normalized = normalize(text).text
    assert normalized == f"Chapter three{HEADING_END}\n\nRoses are red,{LINE_BREAK}violets are blue.\nSugar is sweet."
    chunks = split_chunks(normalized, 100)
    assert "".join(c.text for c in chunks) == normalized
    assert [(c.text.strip(), c.break_after) for c in chunks] == [
        ("Chapter three", BreakKind.HEADING), ("Roses are red,", BreakKind.LINE),
        ("violets are blue.", BreakKind.SENTENCE), ("Sugar is sweet.", BreakKind.SENTENCE)]
