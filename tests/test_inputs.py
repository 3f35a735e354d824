"""Input readers: every supported input becomes job requests; bad input is refused with where it is."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from producer.chunks import HEADING_END
from producer.inputs import markdown_to_text, read_inputs
from producer.text import normalize
from schemas.errors import InvalidInput
from schemas.messages import MAX_TITLE_CHARS, JobRequest
from schemas.status import AudioFormat
from tests.books import build_epub

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _read(*inputs: str | Path, stdin: bytes = b"") -> list[JobRequest]:
    return read_inputs([str(i) for i in inputs], io.TextIOWrapper(io.BytesIO(stdin)), voice=None,
                       format=AudioFormat.WAV, priority=5)


def test_epub_becomes_one_ordered_job_per_chapter(tmp_path: Path) -> None:
    chapters = [("The Beginning", "<p>It was a cold day.</p><p>The clock struck 13.</p>"),
                ("The Middle", "<p>Nothing   happened<br/>for a while.</p>"),
                ("The End", "<div><p>They left at 9 a.m.</p></div>")]
    requests = _read(build_epub(tmp_path / "book.epub", chapters))
    assert [r.title for r in requests] == ["A Small Book", "The Beginning", "The Middle", "The End"]
    assert [r.group_index for r in requests] == [0, 1, 2, 3]
    assert {r.group_title for r in requests} == {"A Small Book"}
    assert {r.source for r in requests} == {str(tmp_path / "book.epub")}
    assert requests[0].text == "A Small Book"  # the opening line; this book names no author
    assert requests[1].text == f"The Beginning{HEADING_END}\n\nIt was a cold day.\n\nThe clock struck 13."
    assert requests[2].text == f"The Middle{HEADING_END}\n\nNothing happened\nfor a while."


def test_markdown_strips_markup_and_keeps_headings_as_structure(tmp_path: Path) -> None:
    body, title = markdown_to_text("# Guide\n\nSome *bold* [link](http://x) ![a cat](c.png).\n\n"
                                   "## Part Two\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert title == "Guide"
    assert body == "Guide\n\nSome bold link a cat.\n\n\nPart Two\n\none\n\ntwo\n\na, b.\n\n1, 2."


def test_txt_jsonl_folder_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes("\ufeffSecond file.".encode())
    (tmp_path / "a.jsonl").write_text('{"text": "First", "id": "n-1", "format": "flac", "voice": "v"}\n\n'
                                      '{"text": "Again"}\n', encoding="utf-8")
    (tmp_path / "skip.wav").write_bytes(b"RIFF")
    requests = _read(tmp_path, "-", stdin=b"From stdin.")
    assert [r.text for r in requests] == ["First", "Again", "Second file.", "From stdin."]
    assert [r.source for r in requests] == [f"{tmp_path / 'a.jsonl'}:1", f"{tmp_path / 'a.jsonl'}:3",
                                            str(tmp_path / "b.txt"), "stdin"]
    assert (requests[0].id, requests[0].format, requests[0].voice) == ("n-1", AudioFormat.FLAC, "v")
    assert requests[1].format == AudioFormat.WAV


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.txt", b"ok \xff bad", r"bad\.txt: not valid UTF-8 at byte offset 3"),
    ("bom.txt", b"\xef\xbb\xbfok \xc3", r"bom\.txt: not valid UTF-8 at byte offset 6"),
    ("empty.txt", b"", r"empty\.txt: nothing to speak"),
    ("blank.md", b"  \n\n ", r"blank\.md: nothing to speak"),
    ("emoji.txt", "😀 👍🏽".encode(), r"emoji\.txt: nothing to speak"),
    ("lines.jsonl", b'{"text": "ok"}\n{"text": "x",}\n', r"lines\.jsonl:2: not valid JSON"),
    ("list.jsonl", b'["text"]\n', r"list\.jsonl:1: a line must be a JSON object"),
    ("extra.jsonl", b'{"text": "a", "pitch": 2}\n', r"extra\.jsonl:1: unknown field\(s\) pitch"),
    ("fmt.jsonl", b'{"text": "a", "format": "mp3"}\n', r"fmt\.jsonl:1: invalid format"),
    ("quiet.jsonl", b'{"text": "a"}\n{"text": "  "}\n', r"quiet\.jsonl:2: nothing to speak"),
    ("dup.jsonl", b'{"text": "a", "id": "x"}\n{"text": "b", "id": "x"}\n', r"dup\.jsonl:2: job id 'x' is used twice"),
    ("book.epub", b"not a zip", r"book\.epub: not a readable EPUB"),
    ("notes.pdf", b"%PDF", r"notes\.pdf: not a readable PDF"),
    ("notes.docx", b"PK", r"notes\.docx: unsupported input type"),
])
def test_bad_input_is_refused_naming_where(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Fine.", encoding="utf-8")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidInput, match=message):
        _read(good, tmp_path / name)  # a good file first: the bad one still refuses everything


def test_missing_path_empty_folder_and_bad_stdin(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file or folder"):
        _read(tmp_path / "nope.txt")
    with pytest.raises(InvalidInput, match="folder has no"):
        _read(tmp_path)
    with pytest.raises(InvalidInput, match="stdin: not valid UTF-8 at byte offset 2"):
        _read("-", stdin=b"ab\xfe")


def test_three_megabyte_text_is_accepted(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("A line of text that goes on. " * 110_000, encoding="utf-8")
    [request] = _read(big)
    assert len(request.text) > 3_000_000


def test_examples_are_readable_and_notices_come_out_as_words() -> None:
    requests = _read(EXAMPLES)
    assert len(requests) >= 4
    notices = [r for r in requests if r.source and ".jsonl:" in r.source]
    assert len(notices) == 3
    for notice in notices:
        spoken = normalize(notice.text).text
        assert not any(ch.isdigit() for ch in spoken), spoken
        assert not any(ch in spoken for ch in "$€£%"), spoken
    lines = (EXAMPLES / "notices.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines if line.strip()] == [n.text for n in notices]


@pytest.mark.parametrize(("line", "words"), [
    ('{"text": "Hello there.", "title": "bad \\ud800 title"}', ["title", "not valid Unicode"]),
    ('{"text": "Hello there.", "title": "nul \\u0000 title"}', ["title", "NUL"]),
    ('{"text": "Hello there.", "voice": "' + "v" * 600 + '"}', ["voice", "at most 512"]),
])
def test_every_field_of_a_jsonl_line_is_validated_in_one_line(tmp_path: Path, line: str, words: list[str]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as raised:
        read_inputs([str(path)], io.StringIO(), voice=None, format=AudioFormat.WAV, priority=5)
    message = str(raised.value)
    assert "\n" not in message and all(w in message for w in words), message
    message.encode("utf-8")  # printable: the bad character is never echoed


def test_a_long_title_is_shortened_to_what_every_store_holds() -> None:
    request = JobRequest(text="Hello.", title="T" * 2000, source="x" * 5000 + "\udcff")
    assert request.title is not None and len(request.title) == MAX_TITLE_CHARS and request.title.endswith("…")
    assert request.source is not None and len(request.source) <= 1024
    request.source.encode("utf-8")
