"""The HTTP service's state in SQL, on SQLite and PostgreSQL: per-key quota, Idempotency-Key, the webhook
claim (compare-and-set: two `serve` processes never deliver the same attempt), ETA, and the OpenAPI
document fuzzed by schemathesis on both stores (no 5xx, responses match the schema)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from producer.eta import fleet_throughput, job_eta
from schemas.db import Store, open_store
from schemas.settings import ServiceSettings
from schemas.status import JobStatus
from schemas.tables import Chunk, Job, JobMetrics, utcnow
from service.app import create_app
from service.keys import create_key
from service.webhooks import WebhookSender, signature
from tests.service_fleet import LOOPBACK_NETWORKS

pytestmark = pytest.mark.integration


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = open_store(db_url)
    yield store
    store.dispose()


def _settings(db_url: str, redis_url: str, **extra: object) -> ServiceSettings:
    return ServiceSettings(database_url=db_url, broker_url=redis_url, queue="ttsfleet-service-test",
                           voice_dirs="/tmp", webhook_secret="s3cret", callback_allow_networks=LOOPBACK_NETWORKS,
                           **extra)  # type: ignore[arg-type]


def test_quota_idempotency_and_keys(db_url: str, redis_url: str, store: Store) -> None:
    _id, key = create_key(store, "team")
    settings = _settings(db_url, redis_url, require_api_keys=True, max_queued_per_key=2)
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        ids = [client.post("/v1/jobs", json={"text": f"Job number {n}."}).json()[0]["id"] for n in range(2)]
        over = client.post("/v1/jobs", json={"text": "One too many."})
        assert over.status_code == 429 and "quota" in over.json()["detail"]
        retry = client.post("/v1/jobs", json={"text": "Job number 0."})  # same text: the same job, no quota
        assert retry.status_code == 429 or retry.json()[0]["id"] == ids[0]
        client.delete(f"/v1/jobs/{ids[0]}")
        keyed = client.post("/v1/jobs", json={"text": "Keyed."}, headers={"Idempotency-Key": "k1"})
        replay = client.post("/v1/jobs", json={"text": "Keyed, changed."}, headers={"Idempotency-Key": "k1"})
        assert keyed.status_code == replay.status_code == 202 and keyed.json()[0]["id"] == replay.json()[0]["id"]
        assert client.post("/v1/jobs", json={"text": "x", "callback_url": "ftp://x"}).status_code == 400
        assert client.post("/v1/jobs", json={"text": "x"}, headers={"Authorization": "Bearer no"}).status_code == 401


def test_two_senders_never_claim_the_same_delivery(db_url: str, redis_url: str, store: Store) -> None:
    settings = _settings(db_url, redis_url)
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        [job] = client.post("/v1/jobs", json={"text": "Ends soon.", "callback_url": "http://127.0.0.1:9/hook"}).json()
    with store.session() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(status=JobStatus.FAILED, error="x",
                                                                       finished_at=utcnow()))
    seen: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        assert request.headers["X-Ttsfleet-Signature"] == signature("s3cret", request.content)
        return httpx.Response(503)

    senders = [WebhookSender(settings, store, transport=httpx.MockTransport(answer)) for _ in range(2)]
    an_hour_ago = utcnow() - timedelta(hours=1)
    claims = [s._claim(job["id"], an_hour_ago) for s in senders]
    assert sorted(c is None for c in claims) == [False, True]  # one claim, one refusal; it lapsed since

    async def both(at: datetime | None = None) -> list[int]:
        return list(await asyncio.gather(*(s.run_once(at) for s in senders)))

    assert sorted(asyncio.run(both())) == [0, 1] and len(seen) == 1  # one attempt (503), back-off after it
    assert asyncio.run(both()) == [0, 0]  # not due yet
    retry_at = utcnow() + timedelta(seconds=settings.webhook_backoff_s + 1)
    assert sorted(asyncio.run(both(retry_at))) == [0, 1] and len(seen) == 2  # due again: still one attempt


def test_eta_from_measured_throughput(db_url: str, redis_url: str, store: Store) -> None:
    settings = _settings(db_url, redis_url)
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        [first] = client.post("/v1/jobs", json={"text": "A first job to measure. " * 4}).json()
        [urgent] = client.post("/v1/jobs", json={"text": "Urgent.", "priority": 9}).json()
        assert client.get(f"/v1/jobs/{first['id']}").json()["eta_s"] is None  # nothing measured yet
    with store.session() as session:
        session.add(JobMetrics(job_id=urgent["id"], voice="v", card="cpu", backend="cpu", dtype="float32",
                               chars=1000, chunks=1, audio_s=10, synth_s=10, queue_wait_s=0, latency_s=1))
    assert fleet_throughput(store).chars_per_s == 100.0
    eta = job_eta(store, first["id"])
    assert eta.backlog_chars > len("A first job to measure. ") * 4 - 5  # its own text plus the urgent one
    assert eta.eta_s == pytest.approx(eta.backlog_chars / 100.0, abs=0.1) and eta.eta_at is not None
    from producer.cli.jobs import _with_eta  # `status --json` carries the same estimate
    from producer.jobs import job_views

    assert _with_eta(store, job_views(store, [first["id"]]))[0].eta_s == eta.eta_s


def test_the_service_never_imports_torch_or_the_worker() -> None:
    import subprocess

    code = ("import sys, service.app, producer.cli.service; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'worker', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_openapi_fuzzed_by_schemathesis(db_url: str, redis_url: str) -> None:
    """Every operation, on SQLite and PostgreSQL (a NUL in a job id reached PostgreSQL as a 500)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    store = open_store(db_url)
    app = create_app(_settings(db_url, redis_url, speech_timeout_s=0.2), store, webhooks=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=5, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance,
                                           status_code_conformance, content_type_conformance])

        try:
            check()
        except Exception as err:  # collected, so one run reports every operation that fails
            failures.append(f"{op.label}: {str(err)[:800]}")
    store.dispose()
    assert not failures, "\n\n".join(failures)


def test_keys_from_a_file_and_revoked_store_keys(tmp_path, store: Store) -> None:  # type: ignore[no-untyped-def]
    from service.keys import Caller, check_key, read_keys_file, revoke_key

    keys_file = tmp_path / "keys"
    keys_file.write_text("# mounted secret\nfile-key-one\n\n", encoding="utf-8")
    file_keys = read_keys_file(keys_file)
    assert check_key(store, "file-key-one", file_keys) is not None
    key_id, key = create_key(store, "team")
    assert check_key(store, key, file_keys) == Caller(key_id, admin=False)
    assert check_key(store, "nope", file_keys) is None
    revoke_key(store, key_id)
    assert check_key(store, key, file_keys) is None


def test_audio_in_an_object_store_is_served_with_ranges_and_side_files(sqlite_url: str, redis_url: str,
                                                                        tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import soundfile as sf

    from schemas.storage import open_output_store, result_files

    store = open_store(sqlite_url)
    settings = _settings(sqlite_url, redis_url, output_dir="memory://svc-test/out")
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        job_id = client.post("/v1/jobs", json={"text": "Stored remotely."}).json()[0]["id"]
        output = open_output_store(settings.output_location)
        location = output.join(f"{job_id}.wav")
        local = tmp_path / "a.wav"
        sf.write(local, np.linspace(-0.5, 0.5, 8000, dtype=np.float32), 16000, subtype="PCM_16")
        output.put_file(local, location)
        (tmp_path / "a.srt").write_text("1\n00:00:00,000 --> 00:00:00,500\nStored remotely.\n")
        output.put_file(tmp_path / "a.srt", result_files(location)[2])
        with store.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(
                status=JobStatus.SUCCEEDED, audio_path=location, finished_at=utcnow()))
        whole = client.get(f"/v1/jobs/{job_id}/audio")
        assert whole.status_code == 200 and whole.content == local.read_bytes()
        part = client.get(f"/v1/jobs/{job_id}/audio", headers={"Range": "bytes=4-11"})
        assert part.status_code == 206 and part.content == local.read_bytes()[4:12]
        assert "Stored remotely." in client.get(f"/v1/jobs/{job_id}/subtitles").text
        output.remove(location)  # fetched once: the cached copy keeps serving the published result
        assert client.get(f"/v1/jobs/{job_id}/audio").content == local.read_bytes()
    store.dispose()


def test_speed_and_lexicon_reach_the_stored_job(sqlite_url: str, redis_url: str) -> None:
    store = open_store(sqlite_url)
    settings = _settings(sqlite_url, redis_url, speech_timeout_s=0.5)
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        posted = client.post("/v1/jobs", json={"text": "Say GIF twice: GIF.", "speed": 1.5,
                                               "lexicon": {"GIF": "jif"}})
        assert posted.status_code == 202, posted.text
        job_id = posted.json()[0]["id"]
        assert client.post("/v1/jobs", json={"text": "x", "speed": 9}).status_code in (400, 422)
        spoken = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Quickly now.", "voice": "alloy",
                                                       "speed": 2.0})
        assert spoken.status_code == 202, spoken.text  # no worker here: queued, answered with its URL
    with store.read() as session:
        job = session.get_one(Job, job_id)
        assert job.options["speed"] == 1.5 and job.options["lexicon"] == [["GIF", "jif"]]
        said = " ".join(session.scalars(select(Chunk.text).where(Chunk.job_id == job_id)))
        assert "jif" in said and "GIF" not in said
        speech = session.get_one(Job, spoken.json()["id"])
        assert speech.options["speed"] == 2.0
    store.dispose()
