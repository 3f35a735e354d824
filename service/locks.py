"""Mutual exclusion per scope (`quota:KEY`, `idempotency:KEY`) across every `serve` process on one store.

The quota (count the key's active jobs and reservations, then reserve) and the `Idempotency-Key` (look for
the first call's jobs, then submit) are each a check followed by a write; two requests of one key
interleaving between the two would both pass the check. Holding the scope's lock around check and write
makes them one step, while other keys (and other scopes) go on in parallel.

PostgreSQL: a session-level advisory lock (`pg_advisory_lock`) on a connection of its own, in autocommit so
it never sits idle inside a transaction, from a small pool of its own so waiting never takes a connection
from the store's pool (a connection whose unlock failed is closed, never reused). SQLite (one host): a lock
file beside the system's temporary files. Inside one process a plain lock per key goes first, so at most
one thread per process waits on the store's lock.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from schemas.db import Store, pg_connect_args
from schemas.errors import RetryableError

WAIT_S = 60.0  # a lock not had within this is a 503 (the store or a stuck request); the client retries

_guard = threading.Lock()
_process_locks: dict[str, threading.Lock] = {}
_lock_engines: dict[str, Engine] = {}


def _number(scope: str) -> int:
    """A signed 64-bit advisory-lock number for `scope`."""
    return int.from_bytes(hashlib.sha256(f"ttsfleet-accept:{scope}".encode()).digest()[:8], "big", signed=True)


def _lock_engine(store: Store) -> Engine:
    url = store.engine.url
    key = url.render_as_string(hide_password=False)
    with _guard:
        if key not in _lock_engines:
            _lock_engines[key] = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=2, max_overflow=16,
                                               pool_timeout=WAIT_S, pool_pre_ping=True,
                                               connect_args=pg_connect_args(url.query))
        return _lock_engines[key]


@contextmanager
def key_lock(store: Store, scope: str) -> Iterator[None]:
    """Hold the lock of `scope` on `store`.

    Raises:
        RetryableError: the lock was not had within WAIT_S, or the store could not be reached.
    """
    where = f"{store.engine.url.render_as_string(hide_password=False)}#{scope}"
    with _guard:
        local = _process_locks.setdefault(where, threading.Lock())
    if not local.acquire(timeout=WAIT_S):
        raise RetryableError("too many submissions with this key at once; try again shortly")
    try:
        if store.dialect == "postgresql":
            with _advisory_lock(store, _number(scope)):
                yield
        else:
            with _file_lock(where):
                yield
    finally:
        local.release()


@contextmanager
def _advisory_lock(store: Store, number: int) -> Iterator[None]:
    from sqlalchemy.exc import OperationalError

    try:
        conn = _lock_engine(store).connect()
        conn.execute(text("SELECT pg_advisory_lock(:n)"), {"n": number})
    except OperationalError as err:
        raise RetryableError(f"database unavailable: {type(err).__name__}") from err
    try:
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:n)"), {"n": number})
        except Exception:
            conn.invalidate()  # its session ends, and the lock with it
            raise
        finally:
            conn.close()


@contextmanager
def _file_lock(where: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    name = hashlib.sha256(where.encode()).hexdigest()[:24]
    lock = FileLock(Path(tempfile.gettempdir()) / f"ttsfleet-accept-{name}.lock", timeout=WAIT_S)
    try:
        lock.acquire()
    except Timeout as err:
        raise RetryableError("too many submissions with this key at once; try again shortly") from err
    try:
        yield
    finally:
        lock.release()
