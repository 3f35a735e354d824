"""The store: migrations on both dialects, and the schema they build matches the tables."""

from __future__ import annotations

from schemas.db import current_revision, downgrade, head_revision, make_engine, open_store, table_names, upgrade


def test_first_use_creates_schema_at_head(db_url: str) -> None:
    store = open_store(db_url)
    assert current_revision(store.engine) == head_revision()
    assert {"jobs", "chunks", "workers", "job_metrics"} <= set(table_names(store.engine))
    store.dispose()


def test_downgrade_then_upgrade_round_trips(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    downgrade(engine, "base")
    assert "jobs" not in table_names(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_migrations_match_the_tables(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from schemas.tables import Base

    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_a_database_that_never_answers_is_a_bounded_one_line_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A server that accepts the TCP connection and then says nothing (a hung or black-holed PostgreSQL).
    import socket
    import time

    import pytest

    import schemas.db
    from schemas.errors import StoreUnavailable

    monkeypatch.setattr(schemas.db, "DB_CONNECT_TIMEOUT_S", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://ttsfleet:secret@127.0.0.1:{silent.getsockname()[1]}/ttsfleet"
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            open_store(url)
        assert time.monotonic() - started < 15
    assert "\n" not in str(raised.value) and "secret" not in str(raised.value)


def test_postgresql_connections_carry_timeouts_unless_the_url_sets_them(pg_url: str) -> None:
    from sqlalchemy import text

    from schemas.db import pg_connect_args

    assert pg_connect_args({})["connect_timeout"] == 10
    assert "connect_timeout" not in pg_connect_args({"connect_timeout": "3"})
    store = open_store(pg_url)
    try:
        with store.read() as session:
            assert session.execute(text("SHOW statement_timeout")).scalar() == "5min"
            assert session.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "30s"
    finally:
        store.dispose()


def test_head_revision_constant_is_the_newest_migration() -> None:
    from schemas.db import HEAD_REVISION

    assert HEAD_REVISION == head_revision()


def test_a_store_behind_head_is_still_upgraded(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    downgrade(engine, "0002")
    upgrade(engine)  # the one-SELECT shortcut must not mistake 0002 for head
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_opening_a_store_at_head_does_not_import_alembic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'at-head.db'}"
    open_store(url).dispose()
    check = ("import sys; from schemas.db import open_store; open_store(sys.argv[1]).dispose(); "
             "print('alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", check, url], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
