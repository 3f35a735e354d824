"""API keys as tenants, and what one key's concurrent requests can do: the quota and `Idempotency-Key` hold
under 30 and 10 concurrent requests, distinct submissions never fight over a file name, a callback given
for an existing job is registered, and no server location leaks through a job's errors; on SQLite and
PostgreSQL, through a real uvicorn server where concurrency matters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from schemas.db import Store, open_store
from schemas.settings import ServiceSettings
from schemas.status import JobStatus, WorkerState
from schemas.tables import Job, JobError, ServiceJob, Worker, utcnow
from service.app import create_app
from service.keys import create_key
from tests.fleet import TTSFLEET
from tests.service_fleet import LOOPBACK_NETWORKS, WEBHOOK_SECRET, Receiver, free_port

pytestmark = pytest.mark.integration


def _settings(db_url: str, redis_url: str, **env: str) -> ServiceSettings:
    return ServiceSettings.from_env({"TTSFLEET_DATABASE_URL": db_url, "TTSFLEET_BROKER_URL": redis_url,
                                     "TTSFLEET_QUEUE": "ttsfleet-tenancy-test", "TTSFLEET_VOICE_DIRS": "/tmp",
                                     "TTSFLEET_REQUIRE_API_KEYS": "1", "TTSFLEET_WEBHOOK_SECRET": WEBHOOK_SECRET,
                                     "TTSFLEET_CALLBACK_ALLOW_NETWORKS": LOOPBACK_NETWORKS, **env})


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = open_store(db_url)
    yield store
    store.dispose()


@pytest.fixture
def server(db_url: str, redis_url: str, store: Store, request: pytest.FixtureRequest) -> Iterator[str]:
    """A real uvicorn server in a thread (its request threads really run at once); extra settings (env
    form) as the fixture's indirect parameter, if any."""
    settings = _settings(db_url, redis_url, **getattr(request, "param", {}))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(settings, store, webhooks=False), host="127.0.0.1", port=port,
                                       log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=20)


def _at_once(base_url: str, key: str, bodies: list[dict[str, object]],
             headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """POST every body to /v1/jobs at the same moment, one thread and connection each."""
    gate = threading.Barrier(len(bodies))

    def post(body: dict[str, object]) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=120,
                          headers={"Authorization": f"Bearer {key}", **(headers or {})}) as client:
            gate.wait()
            return client.post("/v1/jobs", json=body)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, bodies))


def _stored(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


@pytest.mark.slow
@pytest.mark.parametrize("server", [{"TTSFLEET_MAX_QUEUED_PER_KEY": "5"}], indirect=True)
def test_a_keys_quota_holds_under_30_concurrent_submissions(server: str, store: Store) -> None:
    key_id, key = create_key(store, "busy")
    _stale_reservation(store, key_id)
    answers = _at_once(server, key, [{"text": f"Concurrent notice number {n}."} for n in range(30)])
    codes = sorted(a.status_code for a in answers)
    print(f"30 at once, quota 5: {codes.count(202)} accepted, {codes.count(429)} refused, {_stored(store)} stored")
    assert set(codes) <= {202, 429}, [a.text for a in answers if a.status_code not in (202, 429)][:3]
    assert codes.count(202) == 5 and _stored(store) == 5


def _stale_reservation(store: Store, key_id: str) -> None:
    """What a `serve` process that died mid-submission leaves: a reservation of the whole quota, expired."""
    try:
        from schemas.tables import QuotaReservation
    except ImportError:  # before reservations existed
        return
    with store.session() as session:
        session.add(QuotaReservation(id="stale", key_id=key_id, jobs=5, expires_at=utcnow() - timedelta(seconds=1)))


@pytest.mark.slow
def test_the_same_text_from_one_key_at_once_is_one_job(server: str, store: Store) -> None:
    _id, key = create_key(store, "twice")
    answers = _at_once(server, key, [{"text": "The same notice, sent eight times at once."}] * 8)
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers][:3]
    assert len({a.json()[0]["id"] for a in answers}) == 1 and _stored(store) == 1
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(ServiceJob)) == 1


@pytest.mark.slow
def test_one_idempotency_key_under_10_concurrent_retries_is_one_job(server: str, store: Store) -> None:
    _id, key = create_key(store, "retrying")
    answers = _at_once(server, key, [{"text": f"Order confirmation, attempt {n}."} for n in range(10)],
                       headers={"Idempotency-Key": "order-77"})
    assert [a.status_code for a in answers] == [202] * 10, [a.text for a in answers][:3]
    assert len({a.json()[0]["id"] for a in answers}) == 1
    assert _stored(store) == 1  # before the fix: 9 stored, 8 of them owned by no key and outside the quota


@pytest.mark.slow
@pytest.mark.parametrize("template", ["Distinct notice {n} of thirty.",
                                      "The office on Main Street opens at nine, said notice {n}."],
                         ids=["distinct-first-words", "same-first-words"])
def test_30_concurrent_distinct_submissions_are_all_accepted(server: str, store: Store, template: str) -> None:
    """Named by their first words; 30 at once that share them all get in (a racer that keeps losing the
    next free name is named by its id), never as "request (N)"."""
    _id, key = create_key(store, "many")
    answers = _at_once(server, key, [{"text": template.format(n=n)} for n in range(30)])
    assert [a.status_code for a in answers] == [202] * 30, [a.text for a in answers if a.status_code != 202][:3]
    with store.read() as session:
        names = dict(session.execute(select(Job.id, Job.output_name)).all())
    assert len(names) == 30 and len(set(names.values())) == 30, names
    words = "distinct-notice" if template.startswith("Distinct") else "the-office-on-main-street"
    assert all(name.startswith(words) or name == f"{job_id}.wav" for job_id, name in names.items()), names
    assert not any(name.startswith("request") for name in names.values()), names


def test_a_callback_given_for_an_existing_job_is_registered(db_url: str, redis_url: str, store: Store) -> None:
    from service.webhooks import WebhookSender

    _id, key = create_key(store, "hooks")
    settings = _settings(db_url, redis_url)
    receiver = Receiver()
    try:
        with TestClient(create_app(settings, store, webhooks=False)) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            [first] = client.post("/v1/jobs", json={"text": "Call me back."}).json()
            with store.session() as session:
                session.execute(update(Job).where(Job.id == first["id"]).values(
                    status=JobStatus.SUCCEEDED, finished_at=utcnow()))
            again = client.post("/v1/jobs", json={"text": "Call me back.", "callback_url": receiver.url})
            assert again.status_code == 202 and again.json()[0] == {**first, "created": False, "status": "succeeded"}
            assert client.get(f"/v1/jobs/{first['id']}").json()["webhook"]["state"] == "waiting"
            assert asyncio.run(WebhookSender(settings, store).run_once()) == 1
            same = client.post("/v1/jobs", json={"text": "Call me back.", "callback_url": receiver.url})
            assert same.status_code == 202
            assert asyncio.run(WebhookSender(settings, store).run_once()) == 0  # the same URL: no second POST
    finally:
        receiver.close()
    assert len(receiver.calls) == 1 and json.loads(receiver.calls[0][2])["job"]["id"] == first["id"]


def test_errors_and_warnings_show_no_server_location(db_url: str, redis_url: str, store: Store,
                                                     tmp_path: Path) -> None:
    _id, key = create_key(store, "curious")
    out = str(tmp_path / "out")
    settings = _settings(db_url, redis_url, TTSFLEET_OUTPUT_DIR=out)
    endpoint = "http://10.20.30.40:9000"
    with TestClient(create_app(settings, store, webhooks=False)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        [job] = client.post("/v1/jobs", json={"text": "It will fail."}).json()
        with store.session() as session:
            session.execute(update(Job).where(Job.id == job["id"]).values(
                status=JobStatus.FAILED, finished_at=utcnow(),
                error=f"OSError: could not store {out}/.chunks/{job['id']}/00000-a1.wav: [Errno 28] No space left",
                warnings=[f"the book's .m4b could not be made: ffmpeg failed on {out}/Book/01 - One.wav"]))
            session.add(JobError(job_id=job["id"], attempt=1, worker_id="w1", at=utcnow(),
                                 error=f"RetryableError: could not store s3://audio/fleet/.chunks/x.wav: "
                                       f"Could not connect to the endpoint URL: \"{endpoint}/audio/fleet\""))
        body = client.get(f"/v1/jobs/{job['id']}").text
        listed = client.get("/v1/jobs").text
    for text in (body, listed):
        assert out not in text and endpoint not in text and "s3://" not in text and str(tmp_path) not in text, text
    detail = json.loads(body)
    assert "No space left" in detail["error"] and "could not connect" in detail["attempt_errors"][0]["error"].lower()
    from service.webhooks import payload

    sent = payload(store, job["id"])
    assert sent is not None and out.encode() not in sent and endpoint.encode() not in sent


def _as(client: TestClient, key: str) -> TestClient:
    client.headers["Authorization"] = f"Bearer {key}"
    return client


def test_keys_are_tenants_and_an_admin_key_sees_every_job(db_url: str, redis_url: str, store: Store) -> None:
    a_id, a_key = create_key(store, "tenant-a")
    _b_id, b_key = create_key(store, "tenant-b")
    _admin_id, admin_key = create_key(store, "operator", admin=True)
    with TestClient(create_app(_settings(db_url, redis_url), store, webhooks=False)) as client:
        [a_job] = _as(client, a_key).post("/v1/jobs", json={"text": "The same words."}).json()
        [b_job] = _as(client, b_key).post("/v1/jobs", json={"text": "The same words."}).json()
        assert b_job["created"] and b_job["id"] != a_job["id"]  # no oracle of the other tenant's job id
        assert [j["id"] for j in _as(client, a_key).get("/v1/jobs").json()] == [a_job["id"]]
        as_b = _as(client, b_key)
        for answer in (as_b.get(f"/v1/jobs/{a_job['id']}"), as_b.delete(f"/v1/jobs/{a_job['id']}"),
                       as_b.get(f"/v1/jobs/{a_job['id']}/audio"), as_b.get(f"/v1/jobs/{a_job['id']}/manifest")):
            assert answer.status_code == 404 and answer.json()["detail"] == f"no such job: {a_job['id']}"
        assert as_b.get("/v1/jobs/no-such-job").json()["detail"] == "no such job: no-such-job"  # reads the same
        with store.session() as session:
            session.add(Worker(id="w1", host="h", pid=1, device="cpu", card="cpu", backend="cpu", torch_version="x",
                               dtype="float32", state=WorkerState.READY))
            session.execute(update(Job).where(Job.id == a_job["id"]).values(status=JobStatus.RUNNING,
                                                                             lease_owner="w1"))
        assert [w["current_job"] for w in _as(client, b_key).get("/v1/workers").json()] == [None]
        assert [w["current_job"] for w in _as(client, a_key).get("/v1/workers").json()] == [a_job["id"]]
        seen = {j["id"] for j in _as(client, admin_key).get("/v1/jobs").json()}
        assert seen == {a_job["id"], b_job["id"]}
        assert _as(client, admin_key).get(f"/v1/jobs/{a_job['id']}").status_code == 200
    with store.read() as session:
        assert session.get_one(ServiceJob, a_job["id"]).key_id == a_id


def test_hub_voices_are_refused_unless_a_worker_has_them_or_downloads_are_allowed(
        db_url: str, redis_url: str, store: Store) -> None:
    _id, key = create_key(store, "voices")
    hub = "hf:example-org/mms-tts-xyz"
    bodies = [{"text": "Hello there.", "voice": hub},
              {"text": "Hello there.", "voice": f"narrator={hub},dialogue=piper:joe"},
              {"text": f'<speak>Hello <voice name="{hub}">there</voice>.</speak>'}]
    for allow, expected in (("0", 400), ("1", 202)):
        settings = _settings(db_url, redis_url, TTSFLEET_ALLOW_HUB_VOICES=allow)
        with TestClient(create_app(settings, store, webhooks=False)) as client:
            for body in bodies:
                answer = _as(client, key).post("/v1/jobs", json=body)
                assert answer.status_code == expected or (expected == 202 and answer.status_code == 400
                                                          and "sample rate" in answer.text), (body, answer.text)
                if expected == 400:
                    assert "TTSFLEET_ALLOW_HUB_VOICES" in answer.json()["detail"]
    with store.session() as session:  # a worker that loaded it: the voice is there to use
        session.add(Worker(id="w-hub", host="h", pid=1, device="cpu", card="cpu", backend="cpu", torch_version="x",
                           dtype="float32", state=WorkerState.READY, voice=hub))
    with TestClient(create_app(_settings(db_url, redis_url), store, webhooks=False)) as client:
        answer = _as(client, key).post("/v1/jobs", json={"text": "Now it is here.", "voice": hub})
        assert answer.status_code == 202, answer.text
        assert hub in [v["name"] for v in _as(client, key).get("/v1/voices").json()]


def test_admin_keys_from_the_cli(tmp_path: Path) -> None:
    env = {"TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path}/keys.db", "PATH": "/usr/bin:/bin"}
    made = subprocess.run([TTSFLEET, "keys", "create", "ops", "--admin", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["admin"] is True
    listed = json.loads(subprocess.run([TTSFLEET, "keys", "list", "--json"], env=env, capture_output=True, text=True,
                                       timeout=60).stdout)
    assert [k["admin"] for k in listed] == [True]
