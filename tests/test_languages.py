"""Dates, times, money, percentages and ordinals in German, Spanish and French; each language its own."""

from __future__ import annotations

import pytest

from producer.text import normalize


@pytest.mark.parametrize(("language", "text", "said"), [
    ("de", "Am 3. März 2024 um 14:30 Uhr.", "Am dritten März zweitausendvierundzwanzig um vierzehn Uhr dreißig."),
    ("de", "Der 03.10.1990 war ein Feiertag.", "Der dritte Oktober neunzehnhundertneunzig war ein Feiertag."),
    ("de", "Es kostet 5,50 € oder 1.500 €.", "Es kostet fünf Euro und fünfzig Cent oder eintausendfünfhundert Euro."),
    ("de", "Um 9 Uhr sind es 12 % mehr.", "Um neun Uhr sind es zwölf Prozent mehr."),
    ("de", "Pi ist 3,14.", "Pi ist drei Komma eins vier."),
    ("es", "El 3 de marzo de 2024 a las 14:30.", "El tres de marzo de dos mil veinticuatro a las catorce y treinta."),
    ("es", "Cuesta 5,50 € y sube un 12 %.", "Cuesta cinco euros con cincuenta céntimos y sube un doce por ciento."),
    ("es", "El 25/12/2023 es la 2.ª vez.", "El veinticinco de diciembre de dos mil veintitrés es la segunda vez."),
    ("es", "Cuesta 1 £ a las 13:00.", "Cuesta una libra a las trece en punto."),
    ("fr", "Le 1er mars 2024 à 14h30.", "Le premier mars deux mille vingt-quatre à quatorze heures trente."),
    ("fr", "Il coûte 5,50 € et 12 %.", "Il coûte cinq euros et cinquante centimes et douze pour cent."),
    ("fr", "La 1re fois, le 2e jour, à 9:05.", "La première fois, le deuxième jour, à neuf heures cinq."),
    ("fr", "Le 25/12/2023 il pleut.", "Le vingt-cinq décembre deux mille vingt-trois il pleut."),
])
def test_dates_times_money_are_said_in_the_voices_language(language: str, text: str, said: str) -> None:
    assert normalize(text, language).text == said


def test_a_language_never_gets_another_languages_reading() -> None:
    german = "Am 3. März 2024 um 14:30 Uhr kostet es 5,50 €."
    english = "On March 3, 2024 at 2:30 PM it costs $5.50."
    as_english = normalize(german, "en").text
    as_german = normalize(english, "de").text
    assert not any(w in as_english for w in ("dritten", "vierzehn", "Euro und", "fünfzig"))
    assert not any(w in as_german for w in ("third", "thirty", "dollars", "cents", "two thousand"))
    assert "March drei, zweitausendvierundzwanzig" in as_german  # German numbers, no English date reading
    assert normalize("Le 1er mars à 14h30.", "es").text != normalize("Le 1er mars à 14h30.", "fr").text


def test_a_locale_code_picks_its_language() -> None:
    assert normalize("Am 3. März.", "de_DE").text == normalize("Am 3. März.", "de").text == "Am dritten März."
