"""Numbers, dates, times, money and percentages read aloud in Japanese.

num2words (`lang="ja"`) makes the number words, in kanji (`千二百三十四`), which the Japanese front end
(OpenJTalk) reads with the right counter forms (`三月五日` is "sangatsu itsuka", `二十日` "hatsuka"). What no
library does is find the written forms in running Japanese text and put the words in the order Japanese says
them, so the patterns below are written by hand:

- numbers: `1234`, `1,234`, `１２３４` (full-width), `3.14` (`三点一四`), `-5` (`マイナス五`), `3〜5`
  (`三から五`); digit runs longer than 15, and numbers starting with 0, are read digit by digit (`〇九〇`...).
- dates: `2024年3月5日`, `2024/3/5`, `2024-03-05`, `2024.3.5` (all `二千二十四年三月五日`), `3月5日`.
- times: `14:30` (`十四時さんじゅっぷん`): the minutes are written in kana, because OpenJTalk reads a bare `五分`
  after an hour as "gobu" (five percent) rather than "gofun".
- money: `¥1,000`, `1,000円`, `$5.50` (`五ドル五十セント`), `€5`, `£5`; percentages `50%` / `５０％`.
"""

from __future__ import annotations

import re

from num2words import num2words

__all__ = ["minutes_reading", "normalize_japanese", "number_ja"]

MAX_CARDINAL_DIGITS = 15  # as producer.numbers: longer runs are ids and phone numbers, read digit by digit
_FULL_WIDTH = str.maketrans("０１２３４５６７８９，．％＄￥：／－", "0123456789,.%$¥:/-")
_DIGIT_KANJI = "〇一二三四五六七八九"
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?"
# Currency written before the amount, and the unit said after it (with the name of its hundredth).
_MONEY_BEFORE = {"¥": ("円", None), "$": ("ドル", "セント"), "€": ("ユーロ", "セント"), "£": ("ポンド", "ペンス")}
# Minutes whose counter 分 is read "pun" (and the number's last mora shortened): the rest are "fun".
_PUN = {1: "いっぷん", 3: "さんぷん", 4: "よんぷん", 6: "ろっぷん", 8: "はっぷん", 0: "じゅっぷん"}


def normalize_japanese(text: str) -> str:
    """`text` with its numbers, dates, times, money and percentages as Japanese words. Never raises."""
    text = text.translate(_FULL_WIDTH)
    text = re.sub(r"(?<!\d)(\d{4})([/\-.])(\d{1,2})\2(\d{1,2})(?![\d/\-])", _ymd, text)
    text = re.sub(r"(?<!\d)(\d{1,2}):(\d{2})(?![\d:])", _clock, text)
    text = re.sub(rf"(?P<sym>[¥$€£])\s?(?P<amount>{_NUMBER})", _money_before, text)
    text = re.sub(rf"(?P<amount>{_NUMBER})\s?(?:%|パーセント)", lambda m: _amount(m["amount"]) + "パーセント", text)
    text = re.sub(r"(?<=\d)\s?[~〜～]\s?(?=\d)", "から", text)
    text = re.sub(r"(?<![0-9A-Za-z.,])-(?=\d)", "マイナス", text)
    return re.sub(_NUMBER, lambda m: _amount(m[0]), text)


def number_ja(value: int) -> str:
    """A whole number in kanji (`1234` -> `千二百三十四`, `0` -> `零`)."""
    return str(num2words(value, lang="ja"))


def minutes_reading(minutes: int) -> str:
    """Minutes with their counter in kana (`5` -> `ごふん`, `30` -> `さんじゅっぷん`, `0` -> ``)."""
    if minutes <= 0:
        return ""
    reading = str(num2words(minutes, lang="ja", reading=True))
    pun = _PUN.get(minutes % 10)
    if pun is None:
        return reading + "ふん"
    tail = {1: "いち", 3: "さん", 4: "よん", 6: "ろく", 8: "はち", 0: "じゅう"}[minutes % 10]
    if not reading.endswith(tail):  # num2words' reading of 4 or 7 may differ; keep its own, plainly
        return reading + "ふん"
    return reading.removesuffix(tail) + pun


def _amount(raw: str) -> str:
    """`1,234.5` as `千二百三十四点五`; a leading zero or a long run digit by digit."""
    whole, _, frac = raw.replace(",", "").partition(".")
    if len(whole) > MAX_CARDINAL_DIGITS or (len(whole) > 1 and whole.startswith("0")):
        said = "".join(_DIGIT_KANJI[int(d)] for d in whole)
    else:
        said = number_ja(int(whole or "0"))
    if frac:
        said += "点" + "".join(_DIGIT_KANJI[int(d)] for d in frac)
    return said


def _ymd(m: re.Match[str]) -> str:
    year, month, day = int(m[1]), int(m[3]), int(m[4])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m[0]
    return f"{number_ja(year)}年{number_ja(month)}月{number_ja(day)}日"


def _clock(m: re.Match[str]) -> str:
    hour, minute = int(m[1]), int(m[2])
    if hour > 24 or minute > 59:
        return m[0]
    return f"{number_ja(hour)}時{minutes_reading(minute)}"


def _money_before(m: re.Match[str]) -> str:
    unit, hundredth = _MONEY_BEFORE[m["sym"]]
    amount = m["amount"].replace(",", "")
    whole, _, frac = amount.partition(".")
    if hundredth is not None and len(frac) == 2:
        cents = int(frac)
        said = f"{_amount(whole)}{unit}" if int(whole or "0") or not cents else ""
        return said + (f"{number_ja(cents)}{hundredth}" if cents else "")
    return _amount(amount) + unit
