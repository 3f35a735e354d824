"""Shared fixtures: real SQLite/PostgreSQL stores, real Redis and RabbitMQ, the tiny offline VITS.

A missing PostgreSQL, Redis or RabbitMQ fails the tests that need it (never a skip): `make test` starts them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from schemas.db import Store
    from schemas.settings import ProducerSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Voice folders are loaded only from voice directories: every test's voices live under the temp dir.
TEST_VOICE_DIRS = tempfile.gettempdir()
os.environ.setdefault("TTSFLEET_VOICE_DIRS", TEST_VOICE_DIRS)

PG_ADMIN_URL = os.environ.get("TTSFLEET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _redis_test_url() -> str:
    """TTSFLEET_TEST_REDIS_URL (default DB 13); under `pytest -n 2` each xdist worker (gw0, gw1) adds its
    number to the DB, so two workers never flush each other's queues."""
    url = os.environ.get("TTSFLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        base, _, db = url.rpartition("/")
        url = f"{base}/{int(db or 0) + int(worker[2:])}"
    return url


REDIS_TEST_URL = _redis_test_url()


def _pg_admin_engine():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; returns its URL. Fails loudly if PostgreSQL is down."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"ttsfleet_test_{uuid.uuid4().hex[:12]}"
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN_URL} (run `make services`): {err}", pytrace=False)
    finally:
        engine.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from schemas.db import _upgraded

    _upgraded.discard(url)
    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def db(settings: ProducerSettings) -> Iterator[Store]:
    """The store at the test module's own `settings.database_url`, disposed after the test."""
    from schemas.db import open_store

    store = open_store(settings.database_url)
    yield store
    store.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real Redis database, flushed before and after. Fails loudly if Redis is down."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.flushdb()
    except redis.RedisError as err:
        pytest.fail(f"Redis is required at {REDIS_TEST_URL} (run `make services`): {err}", pytrace=False)
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


AMQP_TEST_URL = os.environ.get("TTSFLEET_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost as a broker URL, deleted afterwards. Fails loudly if RabbitMQ is down.

    The vhost is made with `rabbitmqctl`, so the tests must run where RabbitMQ's CLI can reach the node.
    """
    import contextlib
    import subprocess
    from urllib.parse import urlsplit

    from kombu import Connection
    from kombu.exceptions import OperationalError

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60)

    base = urlsplit(AMQP_TEST_URL)
    vhost = f"ttsfleet_test_{uuid.uuid4().hex[:12]}"
    url = base._replace(path=f"/{vhost}").geturl()
    try:
        ctl("add_vhost", vhost)
        ctl("set_permissions", "-p", vhost, base.username or "guest", ".*", ".*", ".*")
        with Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=0)
    except (OSError, subprocess.SubprocessError, OperationalError, *Connection(url).connection_errors) as err:
        detail = getattr(err, "stderr", None) or err
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            ctl("delete_vhost", vhost)
        pytest.fail(f"RabbitMQ is required at {AMQP_TEST_URL} (run `make services`): {detail}", pytrace=False)
    yield url
    ctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def tiny_vits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.testing import build_tiny_vits

    return build_tiny_vits(tmp_path_factory.mktemp("tiny-vits"))


# `make test` runs `pytest -n 2 --dist loadfile`: xdist hands out whole files, those with the most tests
# first. Files with as many tests keep this order (longest first); a plain `pytest` run follows it too.
LONGEST_FIRST = ("test_load.py", "test_integration.py", "test_faults.py", "test_gpu_check.py", "test_service.py",
                 "test_segment_fleet.py", "test_netns.py", "test_storage.py", "test_intelligibility.py",
                 "test_service_load.py", "test_rerender.py", "test_pronunciation.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a file
