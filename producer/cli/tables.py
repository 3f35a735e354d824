"""The jobs tables `run`, `status`, `wait`, `cancel`, `retry` and `rerender` print.

A job is shown by its name (its title, file name or first words; `producer.naming.display_title`) with its
id under it, and its warnings as a count and the first one (`--verbose`: all of them). File paths are not
put in a column, where rich would cut them anywhere at 80 columns: they follow the table, one a line,
never wrapped by rich (a terminal wraps a long one, and it is copied whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from schemas.messages import JobView
from schemas.status import JobStatus

__all__ = ["jobs_table", "shown_path", "warnings_cell"]

JOB_ID_CHARS = 20  # uuid hex ids; the job column is never narrower, so an id is never cut


def jobs_table(views: Sequence[JobView], *, verbose: bool = False, chunks: bool = True,
               title: str | None = None) -> RenderableType:
    """A table of `views` (with a chunks column unless `chunks` is False), then their files."""
    table = Table(title=title, title_justify="left")
    # a name too long for its column ends in "…" (its file is listed whole below); never cut mid-word
    table.add_column("job", min_width=JOB_ID_CHARS, max_width=2 * JOB_ID_CHARS, overflow="ellipsis")
    table.add_column("status", no_wrap=True)
    if chunks:
        table.add_column("chunks", no_wrap=True, justify="right")
    table.add_column("audio s", no_wrap=True, justify="right")
    table.add_column("warnings / error", ratio=1, overflow="fold")
    for v in views:
        name = Text(v.title or v.id)
        if v.title:
            name.append(f"\n{v.id}", style="dim")
        cells: list[RenderableType] = [name, v.status.value]
        if chunks:
            cells.append(f"{v.chunks_done}/{v.chunks_total}")
        cells += [f"{v.audio_s:.2f}" if v.audio_s is not None else "", _notes(v, verbose)]
        table.add_row(*cells)
    files = list(dict.fromkeys(line for v in views for line in _files(v)))  # a book's .m4b once
    if not files:
        return table
    return Group(table, Text("files", style="bold"),
                 *(Text(f"  {line}", no_wrap=True, overflow="ignore") for line in files))


def warnings_cell(warnings: Sequence[str], verbose: bool) -> str:
    """"" without warnings; one: itself; more: "N warnings; first: ..." (`verbose`: all, numbered)."""
    if not warnings:
        return ""
    if len(warnings) == 1:
        return f"warning: {warnings[0]}"
    if verbose:
        return f"{len(warnings)} warnings:\n" + "\n".join(f"{n}. {w}" for n, w in enumerate(warnings, 1))
    return f"{len(warnings)} warnings (--verbose shows all); first: {warnings[0]}"


def _notes(v: JobView, verbose: bool) -> str:
    ended_badly = v.status.is_terminal and v.status != JobStatus.SUCCEEDED  # failed or cancelled: say why
    lines = [f"error: {v.error}"] if ended_badly and v.error else []
    if v.status != JobStatus.FAILED and v.attempt_errors:  # put back after an error: say which
        lines.append(f"last error (attempt {v.attempt_errors[-1].attempt}): {v.attempt_errors[-1].error}")
    if v.segments_total and v.status == JobStatus.RUNNING:  # who is helping with a long job right now
        holders = ", ".join(v.segment_holders) or "nobody"
        lines.append(f"segments {v.segments_done}/{v.segments_total}, held by {holders}")
    return "\n".join([*lines, warnings_cell(v.warnings, verbose)]).strip()


def _files(v: JobView) -> list[str]:
    found = [shown_path(v.audio_path)] if v.audio_path else []
    if v.book_path:
        found.append(f"book: {shown_path(v.book_path)}")
    return found


def shown_path(path: str | None) -> str:
    """Relative to the current folder when inside it: short enough to read on a terminal."""
    if not path:
        return ""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path
