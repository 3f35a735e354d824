"""Alembic environment: runs on the connection ttsfleet hands over (schemas.db.upgrade)."""

from alembic import context

from schemas.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("ttsfleet migrations run through schemas.db.upgrade(), which passes a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite has almost no ALTER TABLE
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
