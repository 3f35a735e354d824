"""The book routes' response bodies (`/v1/books`): a book with its chapters' progress, a page of books, and
the preview of an upload's chapters."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.status import JobStatus


class ChapterDetail(BaseModel):
    """One chapter job of a book; `index` is its number in the book's chapter list (0: the opening line)."""

    index: int
    title: str | None
    job_id: str
    status: JobStatus
    chunks_done: int
    chunks_total: int
    audio_s: float | None
    audio_url: str | None = Field(description="the chapter's audio once it succeeded")
    warnings: list[str] = Field(default_factory=list)


class BookSummary(BaseModel):
    """A book as `GET /v1/books` lists it."""

    id: str
    title: str
    author: str | None
    language: str | None
    status: JobStatus
    chapters_done: int
    chapters_total: int
    chunks_done: int
    chunks_total: int
    audio_s: float
    eta_s: float | None = Field(description="seconds until the last chapter should finish; null until the fleet "
                                            "has measured throughput")
    created_at: str
    finished_at: str | None
    m4b_url: str | None = Field(description="the .m4b, once every chapter succeeded and it was built")
    cover_url: str | None
    warnings: list[str] = Field(default_factory=list)


class BookDetail(BookSummary):
    """One book with its chapters."""

    chapters: list[ChapterDetail] = Field(default_factory=list)


class BookList(BaseModel):
    books: list[BookSummary]
    total: int


class PreviewChapter(BaseModel):
    index: int = Field(description="1-based: the number the `chapters` field takes")
    title: str
    chars: int
    skipped: str | None = Field(description="why it would not be spoken (front or back matter, ...); null: spoken")


class BookPreview(BaseModel):
    """What an upload holds, before anything is stored or queued."""

    title: str
    author: str | None
    language: str | None
    has_cover: bool
    chapters: list[PreviewChapter]
    warnings: list[str] = Field(default_factory=list)
