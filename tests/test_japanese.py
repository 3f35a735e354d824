"""Japanese text: numbers, dates, times and money read in Japanese, chunks cut at 。！？, nothing lost."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.chunks import MIN_CHUNK_CHARS, split_chunks
from producer.japanese import minutes_reading, number_ja
from producer.text import normalize
from schemas.status import BreakKind

_PIECES = st.sampled_from([
    "吾輩は猫である", "名前はまだ無い", "どこで生れたかとんと見当がつかぬ", "ニャーニャー", "コパイロット", "東京",
    "。", "！", "？", "、", "「", "」", "『", "』", "（", "）", "…", "・", " ", "\n", "\n\n", "\n\n\n",
    "2024年3月5日", "2024/03/05", "14:30", "9:05", "¥1,000", "1,234円", "$5.50", "€5", "50%", "５０％", "３．１４",
    "-5", "09012345678", "12345678901234567890", "0.5", "第3章", "ABC", "😀", "42", "1999",
])
_TEXTS = st.lists(_PIECES, max_size=60).map("".join)
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_KANA_KANJI = st.text(alphabet=st.characters(min_codepoint=0x3041, max_codepoint=0x3096) |
                      st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=30)


@pytest.mark.parametrize(("text", "said"), [
    ("2024年3月5日に1,234円払った。", "二千二十四年三月五日に千二百三十四円払った。"),
    ("2024/03/05と2024-3-5", "二千二十四年三月五日と二千二十四年三月五日"),
    ("会議は14:30から。", "会議は十四時さんじゅっぷんから。"),
    ("10:05に。", "十時ごふんに。"),
    ("9:00に。", "九時に。"),
    ("¥1,000と€5と£3。", "千円と五ユーロと三ポンド。"),
    ("$5.50です。", "五ドル五十セントです。"),
    ("$0.99です。", "九十九セントです。"),
    ("確率は50%、いや５０％。", "確率は五十パーセント、いや五十パーセント。"),
    ("円周率は３．１４。", "円周率は三点一四。"),
    ("気温は-5度。", "気温はマイナス五度。"),
    ("電話は09012345678。", "電話は〇九〇一二三四五六七八。"),
    ("第3章", "第三章"),
    ("3〜5人", "三から五人"),
    ("13月40日", "十三月四十日"),  # not a date: the numbers are still read
])
def test_japanese_readings(text: str, said: str) -> None:
    assert normalize(text, "ja").text == said


@pytest.mark.parametrize(("minutes", "said"), [
    (1, "いっぷん"), (2, "にふん"), (3, "さんぷん"), (4, "よんぷん"), (5, "ごふん"), (6, "ろっぷん"), (7, "ななふん"),
    (8, "はっぷん"), (9, "きゅうふん"), (10, "じゅっぷん"), (15, "じゅうごふん"), (30, "さんじゅっぷん"),
    (41, "よんじゅういっぷん"), (0, ""),
])
def test_minutes_take_the_counter_form_japanese_says(minutes: int, said: str) -> None:
    assert minutes_reading(minutes) == said


@given(number=st.integers(min_value=0, max_value=10**12))
def test_any_integer_is_read_as_its_kanji_cardinal(number: int) -> None:
    said = normalize(f"合計{number}個。", "ja").text
    assert said == f"合計{number_ja(number)}個。"
    assert not re.search(r"\d", said)


@_FAST
@given(text=_TEXTS)
def test_japanese_normalization_leaves_no_digits_and_never_raises(text: str) -> None:
    result = normalize(text, "ja")
    assert not re.search(r"[0-9０-９]", result.text), result.text


@_FAST
@given(words=st.lists(_KANA_KANJI, min_size=1, max_size=12))
def test_plain_japanese_is_kept_in_order(words: list[str]) -> None:
    text = "。".join(words) + "。"
    said = normalize(text, "ja").text
    assert said == text
    assert "".join(c.text for c in split_chunks(said, 40)) == said


@_FAST
@given(text=_TEXTS, max_chars=st.integers(min_value=MIN_CHUNK_CHARS, max_value=120))
def test_japanese_chunks_join_back_to_the_normalized_text(text: str, max_chars: int) -> None:
    normalized = normalize(text, "ja").text
    chunks = split_chunks(normalized, max_chars)
    assert "".join(c.text for c in chunks) == normalized
    assert all(0 < len(c.text) <= max_chars and c.text.strip() for c in chunks)


def test_chunks_end_at_japanese_sentence_ends() -> None:
    text = normalize("吾輩は猫である。名前はまだ無い！どこで生れたか？とんと見当がつかぬ。", "ja").text
    chunks = split_chunks(text, 400)
    said = ["吾輩は猫である。", "名前はまだ無い！", "どこで生れたか？", "とんと見当がつかぬ。"]
    assert [c.text for c in chunks] == said
    assert all(c.break_after == BreakKind.SENTENCE for c in chunks)


def test_a_long_japanese_sentence_is_cut_after_a_comma_without_a_space() -> None:
    text = "何でも薄暗いじめじめした所で、ニャーニャー泣いていた事だけは記憶している。"
    chunks = split_chunks(text, 24)
    said = ["何でも薄暗いじめじめした所で、", "ニャーニャー泣いていた事だけは記憶している。"]
    assert [c.text for c in chunks] == said
    assert chunks[0].break_after == BreakKind.NONE
