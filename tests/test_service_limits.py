"""What a hostile or broken client can do to one `ttsfleet serve`: bodies far above the limit (declared or
chunked, with no key), clients that send their request slowly, and odd input anywhere in a request, on
SQLite and PostgreSQL; none of it may cost the server memory, hold it, or get a 5xx."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.db import Store, open_store
from schemas.settings import ServiceSettings
from service.app import create_app
from tests.fleet import TTSFLEET
from tests.service_fleet import serve_process

pytestmark = pytest.mark.integration
MB = 1_000_000


def _peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def _stream(base_url: str, path: str, total_bytes: int, *, chunked: bool, key: str | None = None,
            send_body: bool = True) -> tuple[int | None, int]:
    """POST `total_bytes` of filler to `path` over a raw socket in 64 KB pieces (declared, or chunked);
    stop when the server answers or closes. Returns (HTTP status or None, bytes sent before that)."""
    host, port = base_url.removeprefix("http://").split(":")
    piece = b"x" * 65536
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"Authorization: Bearer {key}\r\n" if key else ""
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total_bytes}\r\n\r\n"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        reply = b""
        try:
            while send_body and sent < total_bytes:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # the server answered (or closed) before the body was all there
                sock.sendall((f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece)
                sent += len(piece)
            reply = sock.recv(65536)
        except OSError:  # reset or broken pipe: the server closed while we were still sending
            pass
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None
    return status, sent


@pytest.fixture
def serve(tmp_path: Path, redis_url: str) -> Iterator[tuple[int, str, str]]:
    """A real `ttsfleet serve` (keys required) on SQLite: (pid, base URL, a valid key)."""
    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path}/store.db", "TTSFLEET_BROKER_URL": redis_url,
           "TTSFLEET_OUTPUT_DIR": str(tmp_path / "out"), "TTSFLEET_CLIENT_TIMEOUT_S": "2"}
    created = subprocess.run([TTSFLEET, "keys", "create", "limits", "--json"], env=env, capture_output=True,
                             text=True, check=True, timeout=60)
    with serve_process(env, tmp_path, "--require-api-keys") as (proc, base_url):
        yield proc.pid, base_url, json.loads(created.stdout)["key"]


@pytest.mark.slow
@pytest.mark.parametrize(("path", "chunked", "keyed"), [
    ("/v1/audio/speech", False, False), ("/v1/audio/speech", True, False), ("/v1/jobs", True, True),
    ("/v1/jobs", True, False), ("/v1/stats", True, True)])
def test_a_huge_body_is_refused_as_it_streams(serve: tuple[int, str, str], path: str, chunked: bool,
                                              keyed: bool) -> None:
    """200 MB at a route: refused at its limit (10 MB for job submission, 1 MB elsewhere) or sooner (no key:
    401 before the body is read), never read whole. Before the fix the speech route read all 200 MB without
    a key (peak memory +400 MB), and job submission with a key buffered a chunked body whole."""
    pid, base_url, key = serve
    before = _peak_rss_bytes(pid)
    status, sent = _stream(base_url, path, 200 * MB, chunked=chunked, key=key if keyed else None)
    grown = _peak_rss_bytes(pid) - before
    print(f"{path} chunked={chunked} keyed={keyed}: answered {status} after {sent / MB:.1f} MB sent; "
          f"peak RSS +{grown / MB:.0f} MB")
    assert sent < 30 * MB, f"the server took {sent / MB:.0f} MB before refusing"
    assert grown < 30 * MB, f"the server's memory grew by {grown / MB:.0f} MB"
    assert status in (401, 413, None) if path != "/v1/stats" else status in (405, 413, None)


def test_a_declared_oversize_body_gets_413_before_the_key_is_checked(serve: tuple[int, str, str]) -> None:
    _pid, base_url, _key = serve
    for path in ("/v1/jobs", "/v1/audio/speech", "/v1/stats"):
        status, _sent = _stream(base_url, path, 200 * MB, chunked=False, send_body=False)
        assert status == 413, (path, status)


@pytest.mark.slow
def test_slow_clients_are_timed_out(serve: tuple[int, str, str]) -> None:
    _pid, base_url, _key = serve
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as headers_slowly:
        headers_slowly.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert headers_slowly.recv(4096) == b""  # closed by the server
        assert time.monotonic() - started < 10
    with socket.create_connection((host, int(port)), timeout=15) as body_slowly:
        body_slowly.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{\"model\": ")
        started = time.monotonic()
        reply = body_slowly.recv(4096)
        assert time.monotonic() - started < 10
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert httpx.get(base_url + "/healthz", timeout=5).status_code == 200  # and the server still answers


@pytest.fixture
def stores(sqlite_url: str, pg_url: str) -> Iterator[dict[str, Store]]:
    opened = {"sqlite": open_store(sqlite_url), "postgresql": open_store(pg_url)}
    yield opened
    for store in opened.values():
        store.dispose()


_ODD = st.sampled_from(["\x00", "a\x00b", "é", "😀", "../etc", "%", "99999999d", "1e308h", "-5d", "9999-12-31T23:59",
                        "0001-01-01", "x" * 300, " ", "request", "a" * 65])
_TEXT = st.one_of(_ODD, st.text(max_size=30))


def _encodable(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


def _multipart(file_name: bytes, content: bytes) -> tuple[bytes, dict[str, str]]:
    """A raw multipart body: the file name's bytes exactly as given (a client may send a NUL in it)."""
    body = (b"--B0UND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + file_name
            + b"\"\r\nContent-Type: text/plain\r\n\r\n" + content + b"\r\n--B0UND--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=B0UND"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_id=_TEXT, since=_TEXT, speech=_TEXT, file_name=_TEXT, suffix=st.sampled_from([".txt", ".jsonl", ".md", ""]))
def test_odd_input_anywhere_never_gets_a_5xx(stores: dict[str, Store], redis_url: str, job_id: str, since: str,
                                             speech: str, file_name: str, suffix: str) -> None:
    """A job id in the path, `since` on the stats and the chart, speech input, an upload's file name: on both
    stores every answer is below 500 (each of these gave a 500 before)."""
    for name, store in stores.items():
        app = create_app(ServiceSettings(database_url=str(store.engine.url.render_as_string(hide_password=False)),
                                         broker_url=redis_url, queue="ttsfleet-limits-test", voice_dirs="/tmp",
                                         speech_timeout_s=0.1), store, webhooks=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            answers = {
                "job": client.get("/v1/jobs/" + quote(_encodable(job_id) or "x", safe="")),
                "stats": client.get("/v1/stats", params={"since": _encodable(since)}),
                "speech": client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                                "input": _encodable(speech) or "x"}),
                "upload": client.post("/v1/jobs", content=_multipart(
                    _encodable(file_name).encode() + suffix.encode(), b"Hello there.")[0],
                    headers=_multipart(b"", b"")[1]),
            }
            if "d" in since or "h" in since:
                answers["chart"] = client.get("/v1/stats/chart.png", params={"since": _encodable(since)})
        bad = {what: (r.status_code, r.text[:120]) for what, r in answers.items() if r.status_code >= 500}
        assert not bad, (name, bad)


@pytest.mark.parametrize("case", ["nul-job-id", "huge-since", "huge-since-chart", "nul-speech", "nul-upload-name"])
def test_the_five_inputs_that_gave_500_are_4xx(stores: dict[str, Store], redis_url: str, case: str) -> None:
    for name, store in stores.items():
        app = create_app(ServiceSettings(database_url=str(store.engine.url.render_as_string(hide_password=False)),
                                         broker_url=redis_url, queue="ttsfleet-limits-test", voice_dirs="/tmp",
                                         speech_timeout_s=0.1), store, webhooks=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            if case == "nul-job-id":
                answer = client.get("/v1/jobs/a%00b")
            elif case.startswith("huge-since"):
                answer = client.get("/v1/stats/chart.png" if case.endswith("chart") else "/v1/stats",
                                    params={"since": "99999999d"})
            elif case == "nul-speech":
                answer = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "a\x00b"})
            else:
                body, headers = _multipart(b"x.jsonl\x00.txt", b"Hello there.")
                answer = client.post("/v1/jobs", content=body, headers=headers)
        assert 400 <= answer.status_code < 500, (name, case, answer.status_code, answer.text)
        assert "\x00" not in answer.text and "\\u0000" not in answer.text
