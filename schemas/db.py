"""Engines and schema upkeep for the SQL store (SQLite embedded, PostgreSQL in production).

`open_store(url)` is the one entry point: it makes the engine and, the first time a process sees a
database, brings its schema to the newest Alembic revision under a lock, so several workers starting
on an empty database do not race.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Executable, create_engine, event, inspect, text
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from schemas.errors import StoreUnavailable, first_line, redact_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 7_316_584_201  # pg_advisory_lock key shared by every ttsfleet process
# Bounds on PostgreSQL, so a worker never hangs on a dead or black-holed database: it gets
# StoreUnavailable, puts its job back and retries. A value given in the URL's query wins.
DB_CONNECT_TIMEOUT_S = 10  # connecting, authentication included
DB_STATEMENT_TIMEOUT_S = 300  # one statement, server side (long stats queries on a large store fit)
DB_TCP_USER_TIMEOUT_S = 60  # sent data unacknowledged this long: the peer is gone (Linux)
# A session idle inside a transaction this long is ended by the server: a frozen worker (VM pause,
# SIGSTOP) cannot hold row locks that its successor needs. ttsfleet's transactions last milliseconds.
DB_IDLE_IN_TRANSACTION_S = 30
_upgraded: set[str] = set()
# The newest Alembic revision, so a store already at it is recognized with one SELECT and without
# importing Alembic (tests/test_db.py checks it against the migration scripts).
HEAD_REVISION = "0013"


class Store:
    """An engine plus a session factory; sessions are short and never span model inference."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Reads skip SQLite's write lock (see _sqlite_begin), so polling `status`/`wait` never blocks a worker.
        self._read_sessions = sessionmaker(engine.execution_options(ttsfleet_read_only=True), expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on exit, rolled back on error.

        Raises:
            StoreUnavailable: the database cannot be reached.
        """
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as err:
            raise StoreUnavailable(f"database unavailable: {first_line(err)}") from err

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (nothing is committed; closing it rolls back without expiring what was read).

        Raises:
            StoreUnavailable: the database cannot be reached.
        """
        try:
            with self._read_sessions() as session:
                yield session
        except OperationalError as err:
            raise StoreUnavailable(f"database unavailable: {first_line(err)}") from err

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()


def changed_rows(session: Session, statement: Executable) -> int:
    """Run a guarded `UPDATE` (or `DELETE`) and return how many rows it changed."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def compare_and_set(session: Session, statement: Executable) -> bool:
    """Run a guarded `UPDATE` of one row (its expected state in the `WHERE` clause): True when it won,
    False when the row was not in that state (someone else changed it first)."""
    return changed_rows(session, statement) == 1


def make_engine(url: str) -> Engine:
    """An engine tuned per dialect: WAL and `BEGIN IMMEDIATE` on SQLite, pre-ping on PostgreSQL."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.database and sa_url.database != ":memory:":
            Path(sa_url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(sa_url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if sa_url.get_backend_name() == "postgresql" and sa_url.get_driver_name() in ("", "psycopg2"):
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    return create_engine(sa_url, pool_pre_ping=True, pool_size=2, max_overflow=4, pool_recycle=1800,
                         connect_args=pg_connect_args(sa_url.query))


def pg_connect_args(url_query: Mapping[str, Any]) -> dict[str, Any]:
    """libpq parameters that bound every PostgreSQL connection (timeouts, TCP keepalives), less those the
    URL's query already sets."""
    bounds: dict[str, Any] = {
        "connect_timeout": DB_CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 30,
        "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": DB_TCP_USER_TIMEOUT_S * 1000,
        "options": f"-c statement_timeout={DB_STATEMENT_TIMEOUT_S * 1000} "
                   f"-c idle_in_transaction_session_timeout={DB_IDLE_IN_TRANSACTION_S * 1000}",
    }
    return {key: value for key, value in bounds.items() if key not in url_query}


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy emit BEGIN (IMMEDIATE, below)
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers take the write lock up front: a read transaction that later upgrades gets SQLITE_BUSY.
    read_only = conn.get_execution_options().get("ttsfleet_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def open_store(url: str) -> Store:
    """Engine for `url` with its schema at the newest revision.

    Raises:
        StoreUnavailable: the database cannot be reached.
    """
    engine = make_engine(url)
    if url not in _upgraded:
        try:
            upgrade(engine)
        except OperationalError as err:
            engine.dispose()
            raise StoreUnavailable(f"cannot open database {redact_url(url)}: {first_line(err)}") from err
        _upgraded.add(url)
    return Store(engine)


def head_revision() -> str:
    script = _script_directory()
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision`, serialized across processes (advisory lock on PostgreSQL, file lock on SQLite).
    A store already at HEAD_REVISION costs one SELECT (Alembic is not even imported)."""
    if revision == "head" and _stored_revision(engine) == HEAD_REVISION:
        return
    if revision == "head" and current_revision(engine) == head_revision():
        return
    with _migration_lock(engine):
        _run_alembic(engine, "upgrade", revision)


def _stored_revision(engine: Engine) -> str | None:
    """The revision in `alembic_version`, or None when there is no such table (a new database)."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


def downgrade(engine: Engine, revision: str = "base") -> None:
    with _migration_lock(engine):
        _run_alembic(engine, "downgrade", revision)


def _run_alembic(engine: Engine, verb: str, revision: str) -> None:
    from alembic import command

    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _script_directory() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
        return
    from filelock import FileLock

    key = hashlib.sha256(str(engine.url).encode()).hexdigest()[:16]
    with FileLock(Path(tempfile.gettempdir()) / f"ttsfleet-migrate-{key}.lock", timeout=120):
        yield


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


