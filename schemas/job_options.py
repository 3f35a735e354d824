"""A job's options, typed: what the producer decided about a job besides its text (speed, lexicon, ...).

Stored as the `jobs.options` JSON object; read and written only through `JobOptions`, so a name is
spelled once. Keys this version does not know are kept as they are (a newer producer's options survive
an older worker's round trip).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class JobOptions:
    """`speed`: times the voice's rate (None: 1); `seed`: the noise seed (None: from the job id);
    `loudness_lufs`: the job's target loudness (None: as synthesized); `lexicon`: (word, replacement)
    pairs; `render`: how many times `rerender` redid the job; `author`/`cover_b64`: a book's metadata for
    its `.m4b`; `book_path`: the book's `.m4b` once made; `tenant`: the API key whose job it is; `chapter`: a
    chapter's number in its book; `aac_*`: its encode for the book's `.m4b` (worker/books.py)."""

    speed: float | None = None
    seed: int | None = None
    loudness_lufs: float | None = None
    lexicon: tuple[tuple[str, str], ...] = ()
    render: int = 0
    author: str | None = None
    cover_b64: str | None = None
    book_path: str | None = None
    tenant: str | None = None  # the API key that submitted the job (part of its idempotency key)
    chapter: int | None = None  # a book chapter's number in its book's chapter list (0: the opening line)
    # A chapter's audio encoded for its book's .m4b: where, of which render, and how long it plays.
    aac_path: str | None = None
    aac_render: int | None = None
    aac_s: float | None = None
    other: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_stored(cls, stored: dict[str, Any] | None) -> JobOptions:
        """The options of a `jobs.options` value (None or {}: the defaults)."""
        values = dict(stored or {})
        known = {f.name for f in fields(cls)} - {"other"}
        kept = {k: v for k, v in values.items() if k in known and v is not None}
        if "lexicon" in kept:
            kept["lexicon"] = tuple((str(w), str(r)) for w, r in kept["lexicon"])
        for name, kind in (("speed", float), ("loudness_lufs", float), ("seed", int), ("render", int),
                           ("chapter", int), ("aac_render", int), ("aac_s", float)):
            if name in kept:
                kept[name] = kind(kept[name])
        return cls(**kept, other={k: v for k, v in values.items() if k not in known})

    def stored(self) -> dict[str, Any]:
        """The JSON object to store: defaults left out, unknown keys kept."""
        out: dict[str, Any] = dict(self.other)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "other" or value is None or value == () or (f.name == "render" and value == 0):
                continue
            out[f.name] = [list(pair) for pair in value] if f.name == "lexicon" else value
        return out

    @property
    def speed_factor(self) -> float:
        """The job's speed as a factor (1.0 when none was asked)."""
        return self.speed if self.speed is not None else 1.0
