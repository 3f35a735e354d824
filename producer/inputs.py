"""Input readers: files, folders, stdin and JSONL notices become validated `JobRequest`s.

Every input is read and checked before anything is returned, so one bad file refuses the whole
submission and nothing is half-submitted. Errors are one line naming the file and the line number or
byte offset.

- `.txt`: one job; UTF-8 with or without BOM. Text starting with `<speak` is SSML (docs/text.md).
- `.ssml`: one job, an SSML document (checked when the job is submitted).
- `.md`: one job; markup stripped, headings kept as their own paragraph; a level-1/2 heading after
  some text starts a new chapter (a chapter break, three newlines).
- `.epub`: one job per spine document with speakable text, in reading order, titled from the table of
  contents (else the document's first heading); `group_title` is the book title, `group_index` 0-based.
- `.jsonl`: one job per non-blank line, `{"text": ..., "id"?, "voice"?, "format"?, "title"?, "priority"?,
  "speed"?, "lexicon"?: {"WORD": "REPLACEMENT", ...}}`.
- a folder: its `.txt/.md/.epub/.jsonl` files, recursively, sorted by relative path (hidden ones skipped).
- `-`: plain text from stdin.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from producer.book_options import BookOptions, Skipped
from producer.book_read import read_epub_book, read_pdf_book
from producer.chapters import BookRead, select_chapters
from producer.html import collapse_blank_lines, html_text
from producer.text import has_speakable
from schemas.errors import InvalidInput, PermanentError
from schemas.messages import JobRequest
from schemas.status import AudioFormat

__all__ = ["MAX_INPUT_BYTES", "SUFFIXES", "BookOptions", "Skipped", "read_inputs"]

SUFFIXES = (".txt", ".md", ".ssml", ".epub", ".pdf", ".jsonl")
MAX_INPUT_BYTES = 64 * 1024 * 1024  # one file; a job's text is further capped by max_text_chars at submit
_JSONL_KEYS = {"text", "id", "voice", "format", "title", "priority", "speed", "lexicon"}


def read_inputs(inputs: Sequence[str], stdin: TextIO, *, voice: str | None, format: AudioFormat,
                priority: int, book: BookOptions | None = None,
                on_skip: Callable[[Skipped], None] | None = None,
                on_book: Callable[[BookRead], None] | None = None) -> list[JobRequest]:
    """Read every input into job requests, in the order given (folders: sorted).

    `book` says how EPUBs are read (default: body matter, notes and captions skipped, headings in the
    voice's language, every chapter); each part of a book left out is passed to `on_skip` (nothing is lost
    silently), and what was read of each book (EPUB or PDF) to `on_book`.

    Raises:
        InvalidInput: a path is missing or of an unsupported type, a file is not UTF-8 (with byte
            offset), a JSONL line is malformed (with line number), an EPUB or PDF cannot be read, or a
            job has nothing to speak. Raised before anything is returned.
    """
    # request fields, plus reader settings under "_" keys (never passed to a JobRequest)
    defaults: dict[str, Any] = {"voice": voice, "format": format, "priority": priority,
                                "_book": book or BookOptions(), "_on_skip": on_skip, "_on_book": on_book}
    requests: list[JobRequest] = []
    for item in inputs:
        if item == "-":
            requests.append(_request(_decode(_read_stdin(stdin), "stdin"), "stdin", defaults))
            continue
        path = Path(item)
        if path.is_dir():
            files = _folder_files(path)
            if not files:
                raise InvalidInput(f"{path}: folder has no {'/'.join(SUFFIXES)} files")
            for file in files:
                requests += _read_file(file, defaults)
        elif path.is_file():
            requests += _read_file(path, defaults)
        else:
            raise InvalidInput(f"{path}: no such file or folder")
    if not requests:
        raise InvalidInput("no input: nothing to submit")
    _check_unique_ids(requests)
    return requests


def _folder_files(folder: Path) -> list[Path]:
    found = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _read_file(path: Path, defaults: dict[str, Any]) -> list[JobRequest]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInput(f"{path}: unsupported input type {suffix or '(none)'}; use {', '.join(SUFFIXES)}")
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise InvalidInput(f"{path}: {size:,} bytes, above the input limit of {MAX_INPUT_BYTES:,} bytes")
    if suffix == ".epub":
        return _read_epub(path, defaults)
    if suffix == ".pdf":
        return _read_pdf(path, defaults)
    text = _decode(path.read_bytes(), str(path))
    if suffix == ".jsonl":
        return list(_read_jsonl(text, str(path), defaults))
    if suffix == ".md":
        body, title = markdown_to_text(text)
        if not has_speakable(body) and has_speakable(text):
            body = text  # markup only (say, raw HTML the parser dropped): speak the source, lose nothing
        return [_request(body, str(path), defaults, title=title)]
    return [_request(text, str(path), defaults)]


def _read_stdin(stdin: TextIO) -> bytes:
    buffer = getattr(stdin, "buffer", None)
    if buffer is not None:
        return bytes(buffer.read())
    try:
        return stdin.read().encode("utf-8", "surrogateescape")
    except UnicodeError as err:
        raise InvalidInput(f"stdin: not valid UTF-8 text ({err})") from err


def _decode(data: bytes, where: str) -> str:
    """UTF-8 with an optional BOM; refuses undecodable bytes with their offset in the original data."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = err.start + bom
        raise InvalidInput(f"{where}: not valid UTF-8 at byte offset {offset} "
                           f"(byte 0x{data[offset]:02x}); save the file as UTF-8") from err


def _read_jsonl(text: str, where: str, defaults: dict[str, Any]) -> Iterator[JobRequest]:
    lines = text.splitlines()
    found = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        found = True
        at = f"{where}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{at}: not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(record, dict):
            raise InvalidInput(f"{at}: a line must be a JSON object with a \"text\" field")
        unknown = sorted(set(record) - _JSONL_KEYS)
        if unknown:
            allowed = ", ".join(sorted(_JSONL_KEYS))
            raise InvalidInput(f"{at}: unknown field(s) {', '.join(unknown)}; allowed: {allowed}")
        if not isinstance(record.get("text"), str):
            raise InvalidInput(f"{at}: \"text\" must be a string")
        overrides = {k: v for k, v in record.items() if k != "text" and v is not None}
        yield _request(record["text"], at, defaults | overrides)
    if not found:
        raise InvalidInput(f"{where}: nothing to speak (no JSONL lines)")


def _request(text: str, where: str, fields: dict[str, Any], **extra: Any) -> JobRequest:
    """One validated request; `where` names it in errors (file or file:line)."""
    fields = {k: v for k, v in fields.items() if not k.startswith("_")}
    if not has_speakable(text):
        raise InvalidInput(f"{where}: nothing to speak" + (" (empty text)" if not text.strip() else
                                                            " (no letters or digits)"))
    try:
        return JobRequest(text=text, source=where, **fields, **extra)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "input"
        raise InvalidInput(f"{where}: invalid {field}: {first['msg']}") from err


def _check_unique_ids(requests: list[JobRequest]) -> None:
    seen: dict[str, str] = {}
    for request in requests:
        if request.id is None:
            continue
        if request.id in seen:
            raise InvalidInput(f"{request.source}: job id '{request.id}' is used twice "
                               f"(also in {seen[request.id]})")
        seen[request.id] = request.source or "input"


# ------------------------------------------------------------------------------------------ markdown

_CHAPTER_MARK = "\ue000"  # private-use placeholder, never in real text, survives blank-line collapsing


def markdown_to_text(source: str) -> tuple[str, str | None]:
    """Markdown without markup: one paragraph per block, image alt text kept, table rows read as
    comma-separated cells, code kept as text. A level-1/2 heading after some text is a chapter break.

    Returns the text and the first level-1 heading (the document title), if any.
    """
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(source)
    parts: list[str] = []
    title: str | None = None
    row: list[str] | None = None
    heading: str | None = None
    for token in tokens:
        if token.type == "heading_open":
            heading = token.tag
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            parts.append(", ".join(cell for cell in row if cell) + ".")
            row = None
        elif token.type == "inline":
            text = _inline_text(token.children or [])
            if row is not None:
                row.append(text)
            elif heading is not None:
                if heading in ("h1", "h2") and any(has_speakable(p) for p in parts):
                    parts.append(_CHAPTER_MARK)
                title = title or (text if heading == "h1" else None)
                parts.append(text)
            else:
                parts.append(text)
        elif token.type == "heading_close":
            heading = None
        elif token.type in ("fence", "code_block"):
            parts.append(token.content)
        elif token.type == "html_block":
            parts.append(html_text(token.content))
    body = collapse_blank_lines("\n\n".join(p for p in parts if p.strip()))
    return body.replace(f"\n\n{_CHAPTER_MARK}\n\n", "\n\n\n"), title


def _inline_text(children: list[Any]) -> str:
    out: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline", "image"):
            out.append(child.content)
        elif child.type == "softbreak":
            out.append(" ")
        elif child.type == "hardbreak":
            out.append("\n")
    return "".join(out).strip()


# ---------------------------------------------------------------------------------------------- EPUB


def _read_epub(path: Path, defaults: dict[str, Any]) -> list[JobRequest]:
    """One job per spoken (and selected) section, after an opening "Title by Author" job, in reading order."""
    options: BookOptions = defaults["_book"]
    if options.language is None:
        options = replace(options, language=_voice_language(defaults.get("voice")))
    parts, read, skipped = read_epub_book(path, options)
    on_skip = defaults.get("_on_skip")
    for item in skipped:
        if on_skip is not None:
            on_skip(item)
    if defaults.get("_on_book") is not None:
        defaults["_on_book"](read)
    return [_request(part.text, str(path), defaults, title=part.title, group_title=read.title,
                     group_index=part.group_index, chapter=part.chapter, author=read.author,
                     cover_image=read.cover if part.group_index == 0 else None)
            for part in parts]


def _read_pdf(path: Path, defaults: dict[str, Any]) -> list[JobRequest]:
    """A PDF is a book of one chapter (its own title, else the file's name)."""
    text, read = read_pdf_book(path, _voice_language(defaults.get("voice")) or "en")
    spec = defaults["_book"].chapters
    if spec:  # one chapter: a selection can only name it, but a wrong one is still refused
        select_chapters(spec, read.chapters, str(path))
    if defaults.get("_on_book") is not None:
        defaults["_on_book"](read)
    return [_request(text, str(path), defaults, title=read.title, group_title=read.title, group_index=0,
                     chapter=1)]


def _voice_language(voice: str | None) -> str | None:
    """The language of the voice that will speak the book; None (the book's own) if it is unknown."""
    from producer.dialogue import parse_voice_roles
    from schemas.voices import resolve_voice_name

    try:
        roles = parse_voice_roles(voice)
        return resolve_voice_name(roles.narrator if roles else voice).language
    except PermanentError:
        return None  # an unusable voice is refused, with its reason, when the jobs are submitted
