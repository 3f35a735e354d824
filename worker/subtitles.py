"""A job's manifest (every chunk's text, break and start and end time) and its subtitles (SubRip, WebVTT),
made from the frames `worker.audio.assemble` wrote."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from schemas.status import AudioFormat

SUBTITLE_WIDTH = 42  # characters per subtitle line


def manifest(name: str, cues: list[dict[str, Any]], frames: int, sample_rate_hz: int, fmt: AudioFormat,
              title: str | None, gain: float) -> dict[str, Any]:
    """The manifest: times in seconds from frame counts; the last chunk ends at the file's end."""
    chunks = []
    for cue in cues:
        end_frame = min(cue["end_frame"], frames)
        if cue is cues[-1]:
            end_frame = frames  # whatever the encoder padded belongs to the last chunk
        chunks.append({"idx": cue["idx"], "text": cue["text"], "written": cue.get("written", cue["text"]),
                       "break_after": cue["break_after"], "start_s": min(cue["start_frame"], frames) / sample_rate_hz,
                       "end_s": end_frame / sample_rate_hz})
    return {"audio": name, "format": str(fmt), "title": title, "sample_rate_hz": sample_rate_hz,
            "audio_s": frames / sample_rate_hz, "gain_db": round(20 * float(np.log10(gain)), 2),
            "chunks": chunks}


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def cues(chunks: Sequence[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """The subtitle cues: the written text (as the reader wrote it: "6 p.m.", not "six P M"), each piece
    timed from the start of the first chunk that says it to the end of the last (a chunk whose `written`
    is "" goes on with the piece before), wrapped to the subtitle width. A chunk without `written` (a
    manifest made before it existed) shows its spoken text."""
    spans: list[list[Any]] = []
    for chunk in chunks:
        text = chunk.get("written", chunk["text"])
        if text == "" and spans:
            spans[-1][1] = max(spans[-1][1], chunk["end_s"])
        elif text or chunk["text"]:
            spans.append([chunk["start_s"], chunk["end_s"], text or chunk["text"]])
    found = []
    for start, end, text in spans:
        if end > start:
            lines = text if len(text) <= SUBTITLE_WIDTH else "\n".join(textwrap.wrap(text, SUBTITLE_WIDTH)) or text
            found.append((start, end, lines))
    return found


def to_srt(chunks: Sequence[dict[str, Any]], said: list[tuple[float, float, str]] | None = None) -> str:
    """SubRip subtitles: one cue per chunk with audio, times from the manifest (`said`: its cues, if made)."""
    blocks = [f"{n}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
              for n, (start, end, text) in enumerate(cues(chunks) if said is None else said, 1)]
    return "\n".join(blocks)


def to_vtt(chunks: Sequence[dict[str, Any]], said: list[tuple[float, float, str]] | None = None) -> str:
    """WebVTT subtitles: the same cues as `to_srt`."""
    blocks = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text.replace('-->', '->')}\n"
              for start, end, text in (cues(chunks) if said is None else said)]
    return "WEBVTT\n\n" + "\n".join(blocks)
