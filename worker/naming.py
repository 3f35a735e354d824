"""Names and seeds a job's files and noise are derived from: the result's key in the output store, the
attempt tag in chunk and staging file names, the audio tags, and the per-chunk noise seeds.
"""

from __future__ import annotations

import hashlib
import re

from worker import audio
from worker.lease import Claim


def output_key(held: Claim) -> str:
    """The job's audio under the output store: its output name (chosen at submit after its input:
    `story.wav`, `Book/01 - Title.wav`); jobs stored before names existed: `<job id>.<fmt>`, a book's
    chapters `<book>-<id>/<NN>-<chapter>.<fmt>`."""
    if held.output_name:
        return held.output_name
    if held.group_id is None:
        return f"{held.job_id}.{held.format}"
    folder = f"{slug(held.group_title or 'book')}-{held.group_id[:8]}"
    number = (held.group_index or 0) + 1
    return f"{folder}/{number:02d}-{slug(held.title or f'chapter {number}')}.{held.format}"


def slug(text: str, max_len: int = 60) -> str:
    cleaned = re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-")
    return cleaned[:max_len].rstrip("-") or "untitled"


def attempt_tag(held: Claim, segment: tuple[int, int] | None = None) -> str:
    """`a<attempt>`, or `s<segment>a<attempt>` for a segment (its index and lease attempt); after a
    re-render prefixed `r<render>-`: attempts count afresh after a re-render, and its kept chunks' files
    must never be overwritten by a new attempt's."""
    tag = f"s{segment[0]}a{segment[1]}" if segment is not None else f"a{held.attempt}"
    render = held.options.render
    return f"r{render}-{tag}" if render else tag


def owner_tag(worker_id: str) -> str:
    """A short, file-name-safe tag of a worker id (two workers may assemble the same attempt)."""
    return hashlib.sha256(worker_id.encode()).hexdigest()[:8]


def tags(held: Claim) -> audio.Tags:
    """A book chapter is tagged with its book, author and track number; any job with its title."""
    if held.group_id is None:
        return audio.Tags(title=held.title)
    return audio.Tags(title=held.title, album=held.group_title, artist=held.options.author,
                      track=(held.group_index or 0) + 1)


def job_seed(job_id: str, seed: int | None) -> int:
    """The job's base seed: its own option, else derived from the id (stable across redeliveries)."""
    if seed is not None:
        return int(seed)
    return int(hashlib.sha256(job_id.encode()).hexdigest()[:8], 16)


def chunk_seed(seed: int, idx: int) -> int:
    return (seed * 1_000_003 + idx) % (2**31 - 1)
