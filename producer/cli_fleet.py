"""`ttsfleet stats` and `ttsfleet workers`: compare what each card delivers."""

from __future__ import annotations

from schemas.errors import NotBuiltYet


def stats() -> None:
    """Throughput comparison per card and dtype."""
    raise NotBuiltYet("`ttsfleet stats` is not built yet")


def workers() -> None:
    """Registered workers and their precision policies."""
    raise NotBuiltYet("`ttsfleet workers` is not built yet")
