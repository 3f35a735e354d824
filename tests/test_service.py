"""The HTTP service end to end: a real `ttsfleet serve` subprocess, a real worker, Redis and SQLite; the
official `openai` client; webhooks to a local receiver that fails twice first."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from tests.conftest import REDIS_TEST_URL
from tests.service_fleet import WEBHOOK_SECRET, Receiver, Service, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def service(tiny_vits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    import redis

    tmp = tmp_path_factory.mktemp("service")
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.flushdb()
    except redis.RedisError as err:
        pytest.fail(f"Redis is required at {REDIS_TEST_URL} (run `make services`): {err}", pytrace=False)
    with running_service(REDIS_TEST_URL, f"sqlite:///{tmp}/service.db", tiny_vits_dir, tmp,
                         TTSFLEET_SPEECH_SYNC_MAX_CHARS="300", TTSFLEET_MAX_UPLOAD_BYTES="1000000") as svc:
        yield svc
    client.flushdb()
    client.close()


def test_the_openai_client_round_trip(service: Service) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=service.base_url + "/v1", api_key=service.key, max_retries=0)
    assert {"tts-1", "ttsfleet"} <= {m.id for m in client.models.list()}
    text = "The north gate closes at six on Friday."
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav").content
    samples, rate = sf.read(io.BytesIO(wav))
    assert len(samples) > rate * 0.2 and abs(samples).max() > 0.001
    magic = {"flac": b"fLaC", "opus": b"OggS", "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xe3")}
    for fmt, starts in magic.items():
        audio = client.audio.speech.create(model="tts-1", voice="nova", input=text, response_format=fmt).content
        assert audio.startswith(starts), (fmt, audio[:8])
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm").content
    assert len(pcm) % 2 == 0 and abs(len(pcm) / 2 / 24_000 - len(samples) / rate) < 0.05  # 24 kHz s16le


def test_long_speech_input_is_answered_202_with_the_job(service: Service) -> None:
    long_text = "A sentence of the long notice. " * 20  # above TTSFLEET_SPEECH_SYNC_MAX_CHARS=300
    with service.client() as client:
        response = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": long_text})
        assert response.status_code == 202, response.text
        body = response.json()
        assert response.headers["location"] == body["url"] == f"/v1/jobs/{body['id']}"
        service.wait_job(body["id"])
        assert client.get(body["audio_url"]).content.startswith(b"RIFF")
        assert client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "x",
                                                     "speed": 9}).status_code in (400, 422)  # 0.25..4.0


def _check_signatures(calls: list[tuple[int, dict[str, str], bytes]]) -> dict[str, Any]:
    for _status, headers, body in calls:
        expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Ttsfleet-Signature"] == expected
    payload: dict[str, Any] = json.loads(calls[-1][2])
    return payload


def test_a_job_over_http_with_range_requests_side_files_and_a_webhook(service: Service) -> None:
    receiver = Receiver(fail_first=2)
    try:
        with service.client() as client:
            job = {"text": "It was a bright cold day in April. The clocks were striking thirteen.",
                   "callback_url": receiver.url, "priority": 7}
            first = client.post("/v1/jobs", json=job, headers={"Idempotency-Key": "order-1"})
            again = client.post("/v1/jobs", json={**job, "text": "Changed on retry."},
                                headers={"Idempotency-Key": "order-1"})
            assert first.status_code == again.status_code == 202, first.text
            [accepted] = first.json()
            assert again.json()[0]["id"] == accepted["id"] and accepted["created"]
            done = service.wait_job(accepted["id"])
            assert done["chunks_done"] == done["chunks_total"] == 2 and done["eta_s"] == 0
            assert done["audio_path"] == done["audio_url"] == f"/v1/jobs/{accepted['id']}/audio"
            full = client.get(done["audio_url"]).content
            part = client.get(done["audio_url"], headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == full[100:200]
            assert part.headers["content-range"] == f"bytes 100-199/{len(full)}"
            assert "-->" in client.get(done["subtitles_url"]).text
            assert client.get(done["subtitles_url"] + "?format=vtt").text.startswith("WEBVTT")
            assert len(client.get(done["manifest_url"]).json()["chunks"]) == 2
            webhook = _wait_webhook(service, client, accepted["id"])
        assert [a["http_status"] for a in webhook["attempts"]] == [500, 500, 200]
        assert webhook["attempts"][0]["next_attempt_at"] and webhook["attempts"][-1]["next_attempt_at"] is None
        assert len(receiver.calls) == 3
        payload = _check_signatures(receiver.calls)
        assert payload["event"] == "job.ended" and payload["job"]["status"] == "succeeded"
    finally:
        receiver.close()


def _wait_webhook(service: Service, client: httpx.Client, job_id: str) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        webhook: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()["webhook"]
        if webhook["state"] != "waiting":
            assert webhook["state"] == "delivered", webhook
            return webhook
        time.sleep(0.2)
    pytest.fail(f"webhook not delivered:\n{service.logs()}")


def test_uploads_keys_limits_paging_and_cancel(service: Service) -> None:
    with service.client() as client:
        uploaded = client.post("/v1/jobs", files={"file": ("notice.md", b"# Notice\n\nThe gate opens at nine.")},
                               data={"priority": "6", "format": "flac"})
        assert uploaded.status_code == 202, uploaded.text
        job = service.wait_job(uploaded.json()[0]["id"])
        assert job["title"] == "Notice" and job["format"] == "flac"
        too_big = client.post("/v1/jobs", files={"file": ("big.txt", b"word " * 210_000)})
        assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
        wrong = client.post("/v1/jobs", files={"file": ("x.exe", b"MZ")})
        assert wrong.status_code == 400 and "x.exe" in wrong.json()["detail"]
        page = client.get("/v1/jobs", params={"status": "succeeded", "limit": 1})
        assert page.status_code == 200 and len(page.json()) == 1
        long_text = "The committee will now read the minutes of the previous meeting. " * 400
        [queued] = client.post("/v1/jobs", json={"text": long_text, "priority": 0}).json()
        cancelled = client.delete(f"/v1/jobs/{queued['id']}").json()
        assert cancelled["status"] == "cancelled"
        assert client.get(f"/v1/jobs/{queued['id']}/audio").status_code == 409
        assert client.get("/v1/jobs/no-such-job").status_code == 404
    assert httpx.get(service.base_url + "/v1/jobs").status_code == 401
    assert httpx.get(service.base_url + "/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    revoked = service.fleet.cli("keys", "create", "leaver", "--json")
    leaver = json.loads(revoked.stdout)
    auth = {"Authorization": f"Bearer {leaver['key']}"}
    assert httpx.get(service.base_url + "/v1/workers", headers=auth).status_code == 200
    assert service.fleet.cli("keys", "revoke", leaver["id"]).returncode == 0
    assert httpx.get(service.base_url + "/v1/workers", headers=auth).status_code == 401
    listed = json.loads(service.fleet.cli("keys", "list", "--json").stdout)
    assert leaver["key"] not in json.dumps(listed) and any(k["revoked_at"] for k in listed)


def test_fleet_endpoints_and_no_path_or_secret_in_any_response(service: Service) -> None:
    with service.client() as client:
        [worker] = client.get("/v1/workers").json()
        assert worker["dtype"] == "float32" and "heartbeat_age_s" in worker and "current_job" in worker
        stats = client.get("/v1/stats").json()
        assert stats and stats[0]["jobs"] >= 1 and stats[0]["chars_per_s"] > 0
        assert client.get("/v1/stats/chart.png").content.startswith(b"\x89PNG")
        assert client.get("/v1/voices").status_code == 200
        assert client.get("/openapi.json").json()["paths"]["/v1/audio/speech"]
        bodies = [client.get(path).text for path in ("/v1/jobs", "/v1/workers", "/v1/stats", "/v1/voices")]
        bodies.append(client.post("/v1/jobs", json={"text": "x", "voice": "/etc/passwd"}).text)
        bodies.append(client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}).text)
    for body in bodies:
        assert str(service.fleet.tmp) not in body and WEBHOOK_SECRET not in body and "Traceback" not in body
    assert httpx.get(service.base_url + "/healthz").json() == {"status": "ok"}


CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (.ci/services.sh installs it); Playwright downloads nothing
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _screenshot_dir(tmp_path: Path) -> Path:
    """Where the dashboard test saves its screenshots: docs/ only when asked (TTSFLEET_UPDATE_SCREENSHOTS=1),
    so a test run never rewrites tracked files."""
    return DOCS if os.environ.get("TTSFLEET_UPDATE_SCREENSHOTS") == "1" else tmp_path


def test_the_dashboard_in_a_real_browser(service: Service, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required (run `make services`)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        page.goto(service.base_url + "/")
        page.fill("#apikey", service.key)
        page.dispatch_event("#apikey", "change")
        page.fill("#text", "Welcome to the fleet. The dashboard shows every job as it is spoken.")
        page.click("#submit-btn")
        expect(page.locator("#submit-msg")).to_contain_text("submitted", timeout=30_000)
        job_id = page.locator("#submit-msg").inner_text().split()[-1]
        row = page.locator(f"tr[data-job='{job_id}']")
        expect(row.locator(".status")).to_have_text("succeeded", timeout=60_000)
        expect(page.locator("#workers tbody tr")).to_have_count(1)
        audio = row.locator("audio")
        expect(audio).to_have_attribute("src", re.compile("^blob:"), timeout=10_000)
        played = audio.evaluate("a => a.play().then(() => new Promise(r => setTimeout(() => r(a.currentTime), 300)))")
        assert played > 0
        with page.expect_download() as download:
            row.locator("a.download").click()
        saved = tmp_path / "download.wav"
        download.value.save_as(saved)
        assert sf.info(str(saved)).duration > 0.5
        page.click("#chart-btn")
        expect(page.locator("#chart")).to_be_visible(timeout=20_000)
        page.wait_for_function("document.querySelector('#chart').naturalWidth > 0")
        page.screenshot(path=str(_screenshot_dir(tmp_path) / "dashboard.png"), full_page=True)
        long_text = "The committee will now read the minutes of the previous meeting. " * 1500
        page.fill("#text", long_text)
        page.fill("#priority", "0")
        page.click("#submit-btn")
        expect(page.locator("#submit-msg")).to_contain_text("submitted", timeout=30_000)
        long_id = page.locator("#submit-msg").inner_text().split()[-1]
        long_row = page.locator(f"tr[data-job='{long_id}']")
        expect(long_row.locator(".status")).to_have_text(re.compile("queued|running"), timeout=20_000)
        page.locator("#jobs").screenshot(path=str(_screenshot_dir(tmp_path) / "dashboard-running.png"))
        long_row.locator("button.cancel").click(timeout=20_000)
        expect(long_row.locator(".status")).to_have_text("cancelled", timeout=20_000)
        browser.close()
