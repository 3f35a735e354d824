"""A person makes an audiobook in the browser: Debian's chromium (Playwright) against a real `ttsfleet serve`
and a real worker subprocess on the model-free `null:` voice, Redis and SQLite, with a Standard Ebooks EPUB
from tests/data (SVG cover).

Upload -> the chapters and what is skipped -> pick chapters -> follow them (queued until a worker starts,
then done, the page polling) -> listen -> fix a word's
pronunciation once (only the chunks that say it are made again; every other chunk's audio is byte for byte
what it was) -> the rebuilt `.m4b` downloaded and checked with ffprobe (chapters, title, author, cover), and a
chapter downloaded under its title. Screenshots of the chapter list and the book page (desktop and 390 px)
go to docs/ when TTSFLEET_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from schemas.tables import Chunk
from tests.books import build_source_epub
from tests.conftest import REDIS_TEST_URL
from tests.fleet import running_fleet
from tests.service_fleet import Service, serve_process
from tests.test_service import CHROMIUM, CHROMIUM_ARGS, DOCS
from worker.audio import read_chunk

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORD, SAY = "Tilney", "Tillnee"  # Henry Tilney, said five times in chapter III
COVER_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="350" height="525" viewBox="0 0 350 525">'
             b'<rect width="350" height="525" fill="#2b4a6f"/><circle cx="175" cy="200" r="90" fill="#e8c872"/>'
             b'<rect x="40" y="380" width="270" height="24" fill="#f4f1ea"/></svg>')


def _epub(tmp: Path) -> Path:
    return build_source_epub(
        tmp / "northanger-abbey.epub", "northanger-abbey",
        ["titlepage.xhtml", "imprint.xhtml", "preface.xhtml", "chapter-3.xhtml", "endnotes.xhtml"],
        title="Northanger Abbey", authors=["Jane Austen"], language="en-GB", cover_svg=COVER_SVG,
        toc={"titlepage.xhtml": "Titlepage", "imprint.xhtml": "Imprint", "preface.xhtml": "Advertisement",
             "chapter-3.xhtml": "III", "endnotes.xhtml": "Endnotes"},
        landmarks={"chapter-3.xhtml": "bodymatter z3998:fiction", "endnotes.xhtml": "backmatter endnotes"})


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """`serve` (API keys required) with no worker yet: the test starts one once the book is queued, so the
    page is seen following it from queued to done."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.flushdb()
    except redis.RedisError as err:
        pytest.fail(f"Redis is required at {REDIS_TEST_URL} (run `make services`): {err}", pytrace=False)
    with running_fleet(REDIS_TEST_URL, f"sqlite:///{tmp_path}/service.db", "null:", tmp_path) as fleet:
        fleet.env["TTSFLEET_SPEECH_TIMEOUT_S"] = "60"
        created = fleet.cli("keys", "create", "tests", "--json")
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        with serve_process(fleet.env, tmp_path, "--require-api-keys") as (proc, base_url):
            yield Service(fleet, base_url, key["key"], key["id"], proc)
    client.flushdb()
    client.close()


def _chunks(service: Service, job_id: str) -> list[dict[str, Any]]:
    """Each chunk's text, where its audio is, and the audio's own bytes."""
    with service.fleet.store.read() as session:
        rows = session.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx)).all()
        out = [{"text": c.text, "at": (c.audio_path, c.audio_offset, c.samples), "done_at": c.done_at} for c in rows]
    for chunk in out:
        path, offset, samples = chunk["at"]
        assert path is not None, chunk  # a chapter of five chunks or more keeps its chunks' audio
        chunk["pcm"] = read_chunk(Path(path), offset, samples).tobytes()
    return out


def _ffprobe(path: Path) -> dict[str, Any]:
    probe = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                            "-show_chapters", str(path)], capture_output=True, text=True, check=True)
    found: dict[str, Any] = json.loads(probe.stdout)
    return found


def _m4b(service: Service, book_id: str) -> bytes | None:
    """The book's .m4b as the API serves it now (None while it is being made again)."""
    with service.client() as client:
        book = client.get(f"/v1/books/{book_id}").json()
        if book["status"] != "succeeded" or not book["m4b_url"]:
            return None
        answer = client.get(book["m4b_url"])
        return answer.content if answer.status_code == 200 else None


def _wait_rebuilt(service: Service, book_id: str, old: bytes | None, timeout_s: float = 60) -> None:
    """Until the book's .m4b is there again and differs from `old` (the word is said longer now)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _m4b(service, book_id)
        if now is not None and now != old:
            return
        time.sleep(0.3)
    pytest.fail(f"the .m4b of {book_id} was not rebuilt in {timeout_s} s:\n{service.logs()}")


def _another_key_sees_no_book(service: Service, book_id: str, job_id: str) -> None:
    """Another key's book and chapter read as ones that do not exist, on every pronunciation route."""
    created = service.fleet.cli("keys", "create", "someone-else", "--json")
    assert created.returncode == 0, created.stderr
    other = {"Authorization": f"Bearer {json.loads(created.stdout)['key']}"}
    with service.client() as client:
        answers = [client.get(f"/v1/jobs/{job_id}/text", headers=other),
                   client.post(f"/v1/books/{book_id}/pronunciations", json={"word": "a", "say": "b"}, headers=other),
                   client.post(f"/v1/books/{book_id}/pronunciations/preview", headers=other,
                               json={"word": "a", "say": "b", "job_id": job_id})]
        assert WORD in client.get(f"/v1/jobs/{job_id}/text").json()["text"]  # the owner's key reads it
    assert [(a.status_code, a.json()["detail"]) for a in answers] == [
        (404, f"no such job: {job_id}"), (404, f"no such book: {book_id}"), (404, f"no such book: {book_id}")]


def _job_list(page: Any, service: Service) -> None:
    """Jobs by title, with their warnings (how many, the first, the rest when opened), paged; the chart
    says it is being drawn while it is (its response held back a moment here)."""
    from playwright.sync_api import expect

    with service.client() as client:
        [noted] = client.post("/v1/jobs", json={"text": "Read the XKCD strip tonight.", "lexicon": {"zebra": "zee"},
                                                "voice": "null:"}).json()
        warnings = service.wait_job(noted["id"])["warnings"]
        total = len(client.get("/v1/jobs", params={"limit": 100}).json())
    assert len(warnings) >= 2 and total >= 5, warnings  # a word without a vowel, an entry that matched nothing
    page.goto(service.base_url + "/?jobs=2")
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(2)
    row = page.locator(f"#jobs tr[data-job='{noted['id']}']")
    summary = row.locator("details.warnings summary")
    expect(summary).to_have_text(f"{len(warnings)} warnings: {warnings[0]}")
    expect(row.locator("details.warnings li")).to_have_text(warnings[1:])
    summary.click()
    expect(row.locator("details.warnings li")).to_be_visible()
    expect(row.locator("td.voice")).to_have_text("null:")
    seen = set(rows.evaluate_all("rs => rs.map(r => r.dataset.job)"))
    page.click("#jobs-next")
    expect(page.locator("#jobs-page")).to_have_text("page 2")
    expect(page.locator("#jobs-prev")).to_be_enabled()
    expect(rows).to_have_count(2)
    assert not seen & set(rows.evaluate_all("rs => rs.map(r => r.dataset.job)"))
    with service.client() as client:
        chart = client.get("/v1/stats/chart.png")  # what the page will be answered
    held: list[Any] = []
    page.route("**/v1/stats/chart.png", lambda route: held.append(route))
    page.click("#chart-btn")
    expect(page.locator("#chart-status")).to_have_text("drawing the chart…")
    expect(page.locator("#chart-btn")).to_be_disabled()
    for _ in range(50):  # the route's handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(100)
    held[0].continue_()
    if chart.status_code == 200:
        expect(page.locator("#chart")).to_be_visible(timeout=30_000)
        expect(page.locator("#chart-status")).to_have_text("")
    else:  # the null voice's jobs take no synthesis time: nothing to compare, and the page says so
        expect(page.locator("#chart-status")).to_have_text(f"no chart: {chart.json()['detail']}", timeout=30_000)
    expect(page.locator("#chart-btn")).to_be_enabled()


def _shots(tmp: Path) -> Path:
    return DOCS if os.environ.get("TTSFLEET_UPDATE_SCREENSHOTS") == "1" else tmp


def test_a_book_made_listened_to_corrected_and_downloaded_in_the_browser(service: Service, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required (run `make services`)"
    epub = _epub(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        page.set_default_timeout(20_000)  # the two shared cores are often loaded: waits of 5 s are too short
        expect.set_options(timeout=20_000)
        page.goto(service.base_url + "/")
        page.fill("#apikey", service.key)
        page.dispatch_event("#apikey", "change")

        # The chapters and what would be skipped, before anything is made; the person adds the Advertisement.
        page.set_input_files("#book-file", str(epub))
        rows = page.locator("#book-chapters tbody tr")
        expect(page.locator("#book-preview-title")).to_have_text("Northanger Abbey", timeout=20_000)
        titles = rows.locator("td.name").all_inner_texts()
        assert "III" in titles and "Endnotes" in titles, titles
        skipped = page.locator("#book-chapters tbody tr.skipped td.name").all_inner_texts()
        assert "Endnotes" in skipped and "III" not in skipped, skipped
        chosen = [t for t, box in zip(titles, rows.locator("input").all(), strict=True) if box.is_checked()]
        advert = rows.filter(has_text="Advertisement").locator("input")
        advert.check()
        chosen = sorted({*chosen, "Advertisement"})
        page.select_option("#book-voice", "null:")
        page.locator("#book-new").screenshot(path=str(_shots(tmp_path) / "book-chapters.png"))
        page.click("#book-start")

        # Its chapters, followed until every one is made; each can be heard while the page stays open.
        book = page.locator("#book")
        expect(book.locator("#book-title")).to_have_text("Northanger Abbey", timeout=20_000)
        chapters = page.locator("#book-chapter-table tbody tr")
        expect(chapters.filter(has_text="III")).to_have_count(1)
        # The book's title line opens it (chapter 0), then the chapters picked.
        assert sorted(chapters.locator("td.name").all_inner_texts()) == sorted(["Northanger Abbey", *chosen])
        expect(page.locator("#book-status")).to_have_text("queued")
        expect(chapters.locator(".status")).to_have_text(["queued"] * (len(chosen) + 1))
        service.fleet.start_worker()  # the page follows the book from here to done without a reload
        expect(page.locator("#book-status")).to_have_text("succeeded", timeout=60_000)
        expect(chapters.locator(".status")).to_have_text(["succeeded"] * (len(chosen) + 1))
        expect(page.locator("#book-m4b a.download")).to_be_visible(timeout=60_000)
        book_id = book.get_attribute("data-book")
        assert book_id
        third = chapters.filter(has_text="III")
        job_id = third.get_attribute("data-job")
        assert job_id
        third.locator("button.listen").click()  # fetched with the key when asked for, then played
        audio = third.locator("audio")
        expect(audio).to_have_attribute("src", re.compile("^blob:"), timeout=10_000)
        assert audio.evaluate("a => new Promise(r => { a.onloadedmetadata = () => r(a.duration);"
                              " a.load(); })") > 1.0

        # A word fixed once: chosen in the chapter's text, heard in its sentence, applied to the book.
        page.select_option("#pron-chapter", job_id)
        expect(page.locator("#pron-text")).to_contain_text(WORD, timeout=10_000)
        page.locator("#pron-text").evaluate(
            """(box, word) => { const node = box.firstChild; const at = node.textContent.indexOf(word);
                const range = document.createRange(); range.setStart(node, at); range.setEnd(node, at + word.length);
                const s = document.getSelection(); s.removeAllRanges(); s.addRange(range); }""", WORD)
        expect(page.locator("#pron-word")).to_have_value(WORD)
        page.fill("#pron-say", SAY)
        page.click("#pron-preview")
        preview = page.locator("#pron-audio")
        expect(preview).to_have_attribute("src", re.compile("^blob:"), timeout=60_000)
        assert preview.evaluate("a => a.readyState >= 1 ? a.duration : new Promise(r => a.onloadedmetadata ="
                                " () => r(a.duration))") > 0.5
        before = _chunks(service, job_id)
        m4b_before = _m4b(service, book_id)
        page.click("#pron-apply")
        expect(page.locator("#pron-msg")).to_contain_text("being made again", timeout=20_000)
        counted = re.search(r"(\d+) chunks in 1 chapter are", page.locator("#pron-msg").inner_text())
        assert counted, page.locator("#pron-msg").inner_text()
        redone = int(counted[1])
        expect(third.locator(".status")).to_have_text("succeeded", timeout=60_000)
        _wait_rebuilt(service, book_id, m4b_before)
        expect(page.locator("#book-m4b a.download")).to_be_visible(timeout=20_000)
        page.locator("#book").screenshot(path=str(_shots(tmp_path) / "book-desktop.png"))

        after = _chunks(service, job_id)
        old_audio = {c["at"]: c for c in before}
        made = [c for c in after if c["at"] not in old_audio]
        kept = [c for c in after if c["at"] in old_audio]
        # Only the chunks that say the word (and a neighbour its longer saying pushed over a chunk's length)
        # were synthesized; every other chunk kept its audio, byte for byte.
        assert len(made) == redone and redone <= 2 * sum(WORD in c["text"] for c in before), (redone, len(before))
        assert all(c in made for c in after if SAY in c["text"]) and not any(WORD in c["text"] for c in after)
        assert len(kept) == len(after) - redone and len(kept) >= len(before) - redone
        for chunk in kept:
            assert (chunk["text"], chunk["done_at"], chunk["pcm"]) == \
                (old_audio[chunk["at"]]["text"], old_audio[chunk["at"]]["done_at"], old_audio[chunk["at"]]["pcm"])

        # The .m4b under the book's title: chapters, title, author and the cover; a chapter under its title.
        with page.expect_download() as download:
            page.locator("#book-m4b a.download").click()
        assert download.value.suggested_filename == "Northanger Abbey.m4b"
        m4b = tmp_path / "book.m4b"
        download.value.save_as(m4b)
        probe = _ffprobe(m4b)
        in_order = [t for t in titles if t in chosen]
        assert [c["tags"]["title"] for c in probe["chapters"]] == ["Northanger Abbey", *in_order]
        tags = {k.lower(): v for k, v in probe["format"]["tags"].items()}
        assert tags["title"] == "Northanger Abbey" and tags["artist"] == "Jane Austen"
        assert any(s.get("disposition", {}).get("attached_pic") for s in probe["streams"])
        with page.expect_download() as chapter_file:
            third.locator("a.download").click()
        assert chapter_file.value.suggested_filename == "III.wav"

        _another_key_sees_no_book(service, book_id, job_id)
        page.set_viewport_size({"width": 390, "height": 844})
        _job_list(page, service)
        page.goto(service.base_url + "/")
        page.locator("#books button.link").first.click()
        expect(page.locator("#book-title")).to_have_text("Northanger Abbey")
        page.select_option("#pron-chapter", job_id)
        expect(page.locator("#pron-text")).to_contain_text(WORD, timeout=10_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
        page.locator("#book").screenshot(path=str(_shots(tmp_path) / "book-phone.png"))
        browser.close()
