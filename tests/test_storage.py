"""Shared audio storage: the fsspec output store on an in-memory filesystem, settings that take URLs, and
a real worker writing chunks and the assembled file to a real S3 endpoint (moto in server mode)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from producer.jobs import job_views
from producer.results import with_audio_urls
from schemas.db import Store
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import JobStatus
from schemas.storage import is_url, open_output_store, result_files
from schemas.tables import Chunk, Job
from tests.deploy_files import compose_command
from tests.fleet import running_fleet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:botocore.*")


def test_settings_accept_urls_and_keep_paths(tmp_path: Path) -> None:
    remote = WorkerSettings.from_env({"TTSFLEET_OUTPUT_DIR": "s3://audio/fleet/"})
    assert remote.output_url == "s3://audio/fleet" and remote.output_location == "s3://audio/fleet"
    local = ProducerSettings.from_env({}, output_dir=f"file://{tmp_path}/out")
    assert local.output_url is None and local.output_dir == tmp_path / "out"
    assert ProducerSettings(output_dir=tmp_path).output_location == str(tmp_path)
    assert not is_url("/srv/audio") and not is_url("file:///srv") and is_url("gs://b/p")


def test_memory_store_puts_fetches_and_removes(tmp_path: Path) -> None:
    store = open_output_store("memory://ttsfleet-unit")
    src = tmp_path / "a.wav"
    src.write_bytes(b"RIFF0123")
    location = store.join("job", "a.wav")
    assert location == "memory://ttsfleet-unit/job/a.wav"
    store.put_file(src, location)
    assert store.exists(location) and store.read_bytes(location) == b"RIFF0123"
    assert store.fetch(location, tmp_path / "copy").read_bytes() == b"RIFF0123"
    assert store.signed_url(location, 60) is None  # the memory filesystem cannot presign
    store.remove(store.join("job"), recursive=True)
    assert not store.exists(location)
    store.remove(location)  # missing: not an error
    assert result_files("s3://b/x/j.flac") == ["s3://b/x/j.flac", "s3://b/x/j.manifest.json", "s3://b/x/j.srt",
                                               "s3://b/x/j.vtt"]


def test_local_store_is_a_plain_folder(tmp_path: Path) -> None:
    store = open_output_store(tmp_path / "out")
    assert store.local and store.join(".chunks", "j1", "x.wav") == str(tmp_path / "out" / ".chunks" / "j1" / "x.wav")
    src = tmp_path / "s.txt"
    src.write_text("hi")
    store.put_file(src, store.join("a", "b.txt"))
    assert (tmp_path / "out" / "a" / "b.txt").read_text() == "hi"
    assert not list((tmp_path / "out" / "a").glob(".*partial"))
    assert store.signed_url(store.join("a", "b.txt"), 60) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """moto's S3 server on a free loopback port (a real HTTP S3 endpoint), started in the background so
    its import overlaps the worker's start-up; `ready` waits for it and creates the bucket."""

    def __init__(self, log_dir: Path) -> None:
        self.port = _free_port()
        self.log = open(log_dir / "moto.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}"}

    def ready(self, bucket: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=5).close()  # CreateBucket (moto accepts it unsigned)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.integration
@pytest.mark.slow
def test_compose_cpu_worker_writes_audio_to_s3_and_status_presigns_it(
        moto_server: MotoServer, redis_url: str, pg_url: str, tiny_vits_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The compose file's CPU worker command line, as a plain process against local Redis and PostgreSQL,
    finishes a job into S3; its probe files and Prometheus gauges are there; gc empties the bucket."""
    s3_endpoint = moto_server.env
    for key, value in s3_endpoint.items():
        monkeypatch.setenv(key, value)
    out = "s3://ttsfleet-audio/fleet"
    argv = compose_command("worker-cpu")
    health = Path(argv[argv.index("--health-dir") + 1])
    with running_fleet(redis_url, pg_url, tiny_vits_dir, tmp_path) as fleet:
        fleet.env.update({**s3_endpoint, "TTSFLEET_OUTPUT_DIR": out, "TTSFLEET_RESULT_TTL_S": "0.001"})
        jsonl = tmp_path / "jobs.jsonl"
        # Six sentences: a long job, whose chunk audio is stored (in S3) as it is made.
        jsonl.write_text(json.dumps({"text": "One sentence. And a second one here. A third. Then a fourth. "
                                             "A fifth one. And the sixth."}) + "\n")
        (health / "ready").unlink(missing_ok=True)
        proc = fleet.start_command(argv)
        assert (health / "ready").is_file()
        moto_server.ready("ttsfleet-audio")
        [job_id] = fleet.submit(str(jsonl), "--format", "flac")
        _wait_succeeded(fleet.store, job_id, fleet.logs)
        [view] = json.loads(fleet.cli("status", job_id, "--json").stdout)
        port = argv[argv.index("--metrics-port") + 1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'ttsfleet_sql_backlog_jobs{queue="ttsfleet",status="queued"}' in metrics, metrics[-2000:]
        assert 'ttsfleet_queue_depth{queue="ttsfleet"}' in metrics
        assert time.time() - (health / "heartbeat").stat().st_mtime < 30
        proc.send_signal(signal.SIGTERM)  # drain: no job running, so it stops at once and is no longer ready
        assert proc.wait(timeout=60) == 0
        assert not (health / "ready").exists()
    _check_s3_result(view, out, job_id, s3_endpoint, tmp_path)
    with fleet.store.read() as session:
        rows = {str(p) for p in session.scalars(select(Chunk.audio_path).where(Chunk.job_id == job_id))}
    # the chunks `rerender` reuses (a batch's chunks share a file), nothing else
    assert sorted(rows) == sorted(open_output_store(out).list(f"{out}/.chunks/{job_id}"))
    purged = fleet.cli("gc", "--json")
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) == {"purged": [job_id], "files_deleted": 4}
    assert not open_output_store(out).exists(view["audio_path"])
    [after] = with_audio_urls(job_views(fleet.store, [job_id]), ProducerSettings.from_env(fleet.env))
    fleet.store.dispose()
    assert after.audio_purged_at and after.audio_url is None


def _wait_succeeded(store: Store, job_id: str, logs: Callable[[], str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with store.read() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status == JobStatus.SUCCEEDED:
            return
        assert status in (JobStatus.QUEUED, JobStatus.RUNNING), f"{status}:\n{logs()}"
        time.sleep(0.2)
    pytest.fail(f"job not done in {timeout_s} s:\n{logs()}")


def _check_s3_result(view: dict[str, Any], out: str, job_id: str, s3: dict[str, str], tmp_path: Path) -> None:
    store = open_output_store(out)
    assert view["audio_path"].startswith(f"{out}/") and view["audio_path"].endswith(".flac")  # named after its input
    data = store.read_bytes(view["audio_path"])
    assert data[:4] == b"fLaC"
    for side in result_files(view["audio_path"])[1:]:
        assert store.exists(side), side
    kept = store.list(f"{out}/.chunks/{job_id}")
    assert view["chunks_total"] > 4 and kept and all(k.endswith(".wav") for k in kept), kept
    assert not (tmp_path / "out").exists()  # nothing local
    assert view["audio_url"].startswith(s3["AWS_ENDPOINT_URL"]) and "Signature" in view["audio_url"]
    with urllib.request.urlopen(view["audio_url"], timeout=10) as response:  # plain HTTP, no credentials
        assert response.read() == data
