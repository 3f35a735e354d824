"""`ttsfleet doctor`: the device found (or simulated) and the precision policy chosen for it."""

from __future__ import annotations

from schemas.errors import NotBuiltYet


def doctor() -> None:
    """Show the device and its precision policy."""
    raise NotBuiltYet("`ttsfleet doctor` is not built yet")
