"""Reading fixes for what books hold (house numbers, fractions, years in prose, Roman numerals) and warnings
that help: each reading with the cases it must leave alone, and a property test that no text is lost."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.lexicon import Lexicon
from producer.reading import house_number_words
from producer.spoken import spoken_chunks
from producer.text import INVISIBLE, normalize


def _said(text: str) -> str:
    return normalize(text, "en").text


@pytest.mark.parametrize(("written", "spoken"), [
    ("He lived at 221B Baker Street.", "He lived at two twenty-one B Baker Street."),
    ("Baker Street 221b, London.", "Baker Street two twenty-one B, London."),
    ("They met at 221b Baker Street.", "They met at two twenty-one B Baker Street."),
    ("Flat 4c is upstairs.", "Flat four C is upstairs."),
    ("Room 105A.", "Room one oh five A."),
    ("It weighs 5kg.", "It weighs five kg."),  # a unit, not a house: said apart, not "fivekg"
    ("Run 5m more.", "Run five m more."),
])
def test_house_numbers(written: str, spoken: str) -> None:
    assert _said(written) == spoken


def test_house_number_words() -> None:
    assert [house_number_words(d) for d in ("7", "42", "100", "221", "305", "1600", "07")] == [
        "seven", "forty-two", "one hundred", "two twenty-one", "three oh five", "sixteen hundred", "zero seven"]


@pytest.mark.parametrize(("written", "spoken"), [
    ("Add 1/3 of the flour.", "Add one third of the flour."),
    ("Pour 3/4 of it.", "Pour three quarters of it."),
    ("Wait 2 1/2 hours.", "Wait two and a half hours."),
    ("About 1 3/4 miles.", "About one and three quarters miles."),
    ("Cut 1/2 and 5/8.", "Cut one half and five eighths."),
    ("Open 24/7, a 50/50 chance.", "Open twenty-four seven, a fifty-fifty chance."),
])
def test_fractions(written: str, spoken: str) -> None:
    assert _said(written) == spoken


@pytest.mark.parametrize("written", ["see example.com/1/3 now", "path a/1/4/b", "score 9/5",
                                     "until 12/25"])
def test_dates_urls_and_other_ratios_are_not_fractions(written: str) -> None:
    said = _said(written)
    assert not re.search(r"third|quarter|fifths|twenty-fifth|half|halves", said), said


def test_slashed_date_stays_a_date() -> None:
    assert _said("Due 12/25/2024.") == "Due December twenty-fifth, twenty twenty-four."


@pytest.mark.parametrize(("written", "spoken"), [
    ("In the year of Our Lord 1775 they sailed.", "In the year of Our Lord seventeen seventy-five they sailed."),
    ("It happened in 1984.", "It happened in nineteen eighty-four."),
    ("The 1850s were hard.", "The eighteen fifties were hard."),
    ("Since 1066 and by early 1775.", "Since ten sixty-six and by early seventeen seventy-five."),
    ("Founded A.D. 1492.", "Founded A D fourteen ninety-two."),
    ("From 1914 to 1918.", "From nineteen fourteen to nineteen eighteen."),
    ("In 1984 was a war.", "In nineteen eighty-four was a war."),
])
def test_years_in_prose(written: str, spoken: str) -> None:
    assert _said(written) == spoken


@pytest.mark.parametrize(("written", "spoken"), [
    ("There were 1984 people.", "There were one thousand, nine hundred and eighty-four people."),
    ("Of 1984 votes cast.", "Of one thousand, nine hundred and eighty-four votes cast."),
    ("In 2500 years.", "In two thousand, five hundred years."),
])
def test_counts_are_not_years(written: str, spoken: str) -> None:
    assert _said(written) == spoken


@pytest.mark.parametrize(("written", "spoken"), [
    ("See Chapter XIV.", "See Chapter Fourteen."),
    ("Book II, Part IV and Act I.", "Book Two, Part Four and Act One."),
    ("As in chapter xiv.", "As in chapter Fourteen."),
    ("After World War II.", "After World War Two."),
    ("Henry VIII married; Louis XIV reigned.", "Henry the Eighth married; Louis the Fourteenth reigned."),
    ("Charles I was beheaded.", "Charles the First was beheaded."),
    ("Pius X and Malcolm X.", "Pius the Tenth and Malcolm X."),
])
def test_roman_numerals(written: str, spoken: str) -> None:
    assert _said(written) == spoken


@pytest.mark.parametrize("written", ["Henry I said no.", "Then I went home.", "the part I think of",
                                     "I, Claudius.", "Mix it, Civil."])
def test_the_pronoun_i_and_words_are_not_numerals(written: str) -> None:
    assert _said(written) == written


def test_contractions_and_invisible_characters_give_no_warning() -> None:
    text = "They’ll say I’m right, don’t they? Word\u2060joiner, soft\u00adhyphen, zero\u200bwidth, \ufeffBOM."
    spoken = spoken_chunks(text, language="en", lexicon=Lexicon(), max_chunk_chars=400, where="t")
    assert spoken.warnings == []
    said = " ".join(c.text for c in spoken.chunks)
    assert "They’ll say I’m right, don’t they?" in said
    assert "Wordjoiner, softhyphen, zerowidth, BOM." in said  # nothing visible lost, no space in a word


def test_each_remaining_warning_says_what_to_do() -> None:
    spoken = spoken_chunks("Pfft, said XKCD 😀.", language="en", lexicon=Lexicon.from_pairs([["nasa", "Nay-sah"]]),
                           max_chunk_chars=400, where="t")
    vowelless, = (w for w in spoken.warnings if w.startswith("words without a vowel"))
    assert "Pfft, XKCD" in vowelless and "printf 'Pfft\\tPfft\\n' >> lexicon.tsv" in vowelless
    assert any("write it as words" in w for w in spoken.warnings)
    assert any(w.startswith("lexicon entries that match no word of this job: nasa (check their spelling")
               for w in spoken.warnings)


# Words (none a Roman numeral, a month, a year word or an abbreviation) and number forms books hold.
_WORDS = st.sampled_from(["the", "cat", "Baker", "Street", "house", "flour", "hours", "people", "sailed",
                          "Henry", "Chapter", "Our", "Lord", "year", "They’ll", "don’t", "word\u2060joiner"])
_NUMBERS = st.sampled_from(["221B", "221b", "12A", "1/3", "3/4", "2 1/2", "12/25", "12/25/2024", "1775", "1850s",
                            "24/7", "5kg", "XIV", "VIII", "I", "1,234", "3.5", "42", "7th", "a/1/4/b", "1/1000"])
_SEPARATORS = st.sampled_from([" ", ", ", ". ", "\n\n", " in ", " of "])
_NUMERALS = {"XIV", "VIII", "I"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_WORDS | _NUMBERS, _SEPARATORS), min_size=1, max_size=25))
def test_no_text_lost(parts: list[tuple[str, str]]) -> None:
    """Every digit is read as words and every word is said, in order; anything dropped is in a warning."""
    text = "".join(p + s for p, s in parts)
    result = normalize(text, "en")
    assert not re.search(r"\d", result.text), result.text
    said = [w.lower() for w in re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)*", result.text)]
    position = 0
    for written, _ in parts:
        word = written.replace("\u2060", "")
        if (not word.isalpha() and "’" not in word) or word in _NUMERALS:  # a numeral is said as its number
            continue
        assert word.lower() in said[position:], (word, result.text)
        position = said.index(word.lower(), position) + 1
    dropped = {c for c in text if not c.isalnum() and c not in " ,.\n/’" and c not in INVISIBLE}
    assert not dropped or result.warnings


def test_each_chunk_keeps_the_written_text_it_says() -> None:
    spoken = spoken_chunks("We meet at 6 p.m. sharp. It costs $12.50, about 1/3 of it!\n\nNo numbers here.",
                           language="en", lexicon=Lexicon(), max_chunk_chars=40, where="t")
    pairs = list(zip((c.text for c in spoken.chunks), spoken.written, strict=True))
    assert pairs == [("We meet at six P M sharp.", "We meet at 6 p.m. sharp."),
                     ("It costs twelve dollars and fifty", "It costs $12.50,"),  # a sentence cut at the cap:
                     ("cents, about one third of it!", "about 1/3 of it!"),  # its words go where they are said
                     ("No numbers here.", None)]  # the same as spoken: nothing stored
    spoken = spoken_chunks("It holds 1,234,567 things and more.", language="en", lexicon=Lexicon(),
                           max_chunk_chars=40, where="t")
    assert [(c.text, w) for c, w in zip(spoken.chunks, spoken.written, strict=True)] == [
        ("It holds one million,", "It holds 1,234,567"),
        ("two hundred and thirty-four thousand,", ""),  # goes on with the written text before
        ("five hundred and sixty-seven things and", "things and"), ("more.", None)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_WORDS | _NUMBERS, st.sampled_from([" ", ", ", ". ", " in ", " of "])), min_size=1,
                max_size=25))
def test_the_marks_change_nothing_the_voice_says(parts: list[tuple[str, str]]) -> None:
    """Chunks cut with the written pieces marked say exactly the normalized text, and the written texts
    they carry are the written text, whole and in order. (Across a blank line the marks do change one
    thing, for the better: a date rule no longer reaches from one paragraph into the next, "1/3" then
    "12/25/2024" is not "the third of December".)"""
    text = "".join(p + s for p, s in parts)
    spoken = spoken_chunks(text, language="en", lexicon=Lexicon(), max_chunk_chars=40, where="t")
    assert " ".join(c.text for c in spoken.chunks).split() == normalize(text, "en").text.split()
    written = spoken.written or (None,) * len(spoken.chunks)
    shown = [c.text if w is None else w for c, w in zip(spoken.chunks, written, strict=True)]
    assert " ".join(shown).split() == text.replace("\u2060", "").split()


def test_subtitle_cues_show_the_written_text_over_the_chunks_that_say_it() -> None:
    from worker.subtitles import cues

    chunks = [{"text": "six P M.", "written": "6 p.m.", "start_s": 0.0, "end_s": 1.0},
              {"text": "twelve dollars and fifty", "written": "$12.50 each.", "start_s": 1.3, "end_s": 2.0},
              {"text": "cents each.", "written": "", "start_s": 2.1, "end_s": 3.0},
              {"text": "Old manifest.", "start_s": 3.3, "end_s": 4.0}]
    assert cues(chunks) == [(0.0, 1.0, "6 p.m."), (1.3, 3.0, "$12.50 each."), (3.3, 4.0, "Old manifest.")]
