"""Books from the command line: `--list-chapters` (nothing stored), `--chapters` (numbers and a title match),
the book id in `--json`, `status BOOK_ID`, `wait BOOK_ID`, `cancel BOOK_ID`, `retry BOOK_ID`, and
`rerender BOOK_ID --lexicon` building the .m4b again; on SQLite and PostgreSQL with a real Redis broker,
chapters spoken in-process by the model-free `null:` voice."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

import schemas.db
from producer.cli import main
from schemas.db import Store, open_store
from schemas.tables import Book, Job
from tests.books import build_epub

pytestmark = pytest.mark.integration

CHAPTERS = [("Down the Rabbit Hole", "<p>Alice was beginning to get very tired of sitting by her sister.</p>"),
            ("The Pool of Tears", "<p>Curiouser and curiouser, cried Alice.</p>"),
            ("A Caucus Race", "<p>They were indeed a queer looking party that assembled on the bank.</p>"),
            ("The Rabbit Sends in a Little Bill", "<p>It was the White Rabbit, trotting slowly back again.</p>")]


@pytest.fixture
def env(db_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI's settings in the environment, and an EPUB; the stores the commands open (each process's own in
    real use) are disposed after the test, so no PostgreSQL connection is left open."""
    opened: list[Store] = []

    def tracked(url: str) -> Store:
        opened.append(real_open(url))
        return opened[-1]

    real_open = schemas.db.open_store
    monkeypatch.setattr(schemas.db, "open_store", tracked)
    for name, value in {"TTSFLEET_DATABASE_URL": db_url, "TTSFLEET_BROKER_URL": redis_url,
                        "TTSFLEET_OUTPUT_DIR": str(tmp_path / "out"), "TTSFLEET_VOICE": "null:",
                        "TTSFLEET_QUEUE": "ttsfleet-books-cli-test"}.items():
        monkeypatch.setenv(name, value)
    yield build_epub(tmp_path / "alice.epub", CHAPTERS, title="Alice", author="Lewis Carroll")
    for store in opened:
        store.dispose()


def _cli(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    try:
        main(list(args))
        exit_code = 0
    except SystemExit as done:
        exit_code = int(done.code or 0)
    out, err = capsys.readouterr()
    assert exit_code == code, (args, out, err)
    return out, err


def _jobs(db_url: str) -> int:
    store = open_store(db_url)
    try:
        with store.read() as session:
            return int(session.scalar(select(func.count()).select_from(Job)) or 0)
    finally:
        store.dispose()


def _duration_s(path: str) -> float:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                          capture_output=True, text=True, check=True, timeout=60)
    return float(done.stdout)


def test_list_chapters_and_bad_selections_store_nothing(env: Path, db_url: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = _cli(capsys, "submit", str(env), "--list-chapters", "--json")
    [book] = json.loads(out)
    spoken = [c for c in book["chapters"] if c["skipped"] is None]
    assert [c["title"] for c in spoken] == [t for t, _ in CHAPTERS] and all(c["selected"] for c in spoken)
    assert (book["title"], book["author"], book["has_cover"]) == ("Alice", "Lewis Carroll", False)
    out, _ = _cli(capsys, "run", str(env), "--list-chapters", "--chapters", "Pool")
    assert "The Pool of Tears" in out and "not selected" in out and "yes" in out
    for selection, says in (("99", "not in the book"), ("Jabberwocky", "no chapter title contains"),
                            ("4-2", "run backwards"), (",", "is empty")):
        _out, err = _cli(capsys, "submit", str(env), "--chapters", selection, code=1)
        assert says in err and err.count("\n") == 1, err
    assert _jobs(db_url) == 0


def test_a_book_run_by_chapter_followed_and_rerendered(env: Path, db_url: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    numbers = {c["title"]: c["index"] for c in json.loads(_cli(capsys, "submit", str(env), "--list-chapters",
                                                               "--json")[0])[0]["chapters"]}
    first = numbers["Down the Rabbit Hole"]
    out, err = _cli(capsys, "run", str(env), "--chapters", f"{first},Caucus", "--json")
    views = json.loads(out)
    book_id = views[0]["book_id"]
    assert book_id and {v["book_id"] for v in views} == {book_id} and f"book {book_id}" in err
    assert [v["title"] for v in views] == ["Alice", "Down the Rabbit Hole", "A Caucus Race"]
    assert {v["status"] for v in views} == {"succeeded"} and views[0]["book_path"].endswith("Alice.m4b")
    m4b = views[0]["book_path"]
    before = _duration_s(m4b)

    out, _ = _cli(capsys, "status", book_id)
    assert f"book {book_id}: Alice by Lewis Carroll: succeeded, chapters 3/3" in out.replace("\n", " ")
    assert all(v["id"] in out for v in views)
    assert [v["id"] for v in json.loads(_cli(capsys, "status", book_id, "--json")[0])] == [v["id"] for v in views]
    assert {v["status"] for v in json.loads(_cli(capsys, "wait", book_id, "--json")[0])} == {"succeeded"}

    lexicon = tmp_path / "names.tsv"
    lexicon.write_text("Alice\tAlice Liddell of Christ Church Oxford\n", encoding="utf-8")
    out, _ = _cli(capsys, "rerender", book_id, "--lexicon", str(lexicon), "--json")
    redone = {v["id"]: v["chunks_redone"] for v in json.loads(out)}
    assert redone[views[0]["id"]] >= 1 and redone[views[1]["id"]] >= 1 and redone[views[2]["id"]] == 0
    after = json.loads(_cli(capsys, "status", book_id, "--json")[0])
    assert {v["book_path"] for v in after} == {m4b}  # built again once the re-rendered chapters succeeded
    assert _duration_s(m4b) > before + 1.0  # the longer name is in the new .m4b

    store = open_store(db_url)
    try:
        with store.read() as session:
            row = session.get_one(Book, book_id)
            assert (row.title, row.author, row.options["chapters"]) == ("Alice", "Lewis Carroll", f"{first},Caucus")
            assert row.source_sha256 and len(row.source_sha256) == 64 and row.key_id is None
    finally:
        store.dispose()


def test_submit_cancel_and_retry_a_book(env: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _cli(capsys, "submit", str(env), "--json")
    submitted = json.loads(out)
    book_id = submitted[0]["book_id"]
    assert len(submitted) == 5 and {s["book_id"] for s in submitted} == {book_id} and book_id in err
    out, _ = _cli(capsys, "status", book_id)
    assert f"book {book_id}: Alice by Lewis Carroll: queued, chapters 0/5" in out.replace("\n", " ")
    cancelled = json.loads(_cli(capsys, "cancel", book_id, "--json")[0])
    assert [c["id"] for c in cancelled] == [s["id"] for s in submitted]
    assert {c["status"] for c in cancelled} == {"cancelled"}
    _out, err = _cli(capsys, "retry", book_id, code=1)
    assert f"book {book_id} has no failed chapter to retry" in err
    _out, err = _cli(capsys, "wait", book_id, "--timeout", "1", code=1)


def test_run_into_a_pipe_says_each_chapter_as_it_is_done(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _cli(capsys, "run", str(env), "--chapters", "Pool")  # pytest's capture is no terminal
    assert "1/2 done (" in err and "2/2 done (" in err and ": The Pool of Tears" in err
    assert "The Pool of Tears" not in out.split("results")[0]  # the lines go to stderr, the tables to stdout
