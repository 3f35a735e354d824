"""The speed benchmark's texts (bench/texts/, written for it) and the sentences every contender speaks."""

from __future__ import annotations

import json
from pathlib import Path

TEXTS = Path(__file__).parent / "texts"
CHAPTER = TEXTS / "chapter.txt"
NOTICES = TEXTS / "notices.jsonl"


def chapter_text() -> str:
    """The ~2,800-character chapter."""
    return CHAPTER.read_text(encoding="utf-8")


def notice_texts(count: int | None = None) -> list[str]:
    """The first `count` of the 100 notices (all when None)."""
    lines = NOTICES.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:count]]


def sentences(text: str) -> list[str]:
    """The chunks ttsfleet cuts `text` into (one sentence each), stripped: what every contender speaks."""
    from producer.chunks import split_chunks

    return [chunk.text.strip() for chunk in split_chunks(text, 400)]
