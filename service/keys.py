"""API keys: created and revoked with `ttsfleet keys`, stored as SHA-256 digests, checked per request.

A key is a tenant: it sees only the jobs it submitted. An admin key (`keys create --admin`) sees every job.

A key is 32 random bytes (`secrets.token_urlsafe`), so a plain SHA-256 of it cannot be brute-forced; a slow
password hash (bcrypt, argon2) would only add latency to every request. Keys may also come from a file
(`TTSFLEET_API_KEYS_FILE`: one key a line, `#` comments), for deployments that mount secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, update

from schemas.db import Store
from schemas.errors import InvalidInput
from schemas.tables import ApiKey, utcnow

KEY_PREFIX = "tf_"
FILE_KEY_PREFIX = "file:"  # key ids of keys read from the keys file


@dataclass(frozen=True, slots=True)
class KeyView:
    """A stored key as `keys list` shows it (never the key itself)."""

    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the key's id ("" when the server requires no key) and whether it sees every
    tenant's jobs (an admin key, or a server that requires no key: one user)."""

    key_id: str
    admin: bool

    @property
    def tenant(self) -> str | None:
        """The scope of the caller's jobs: None (shared with the CLI) when no key is required."""
        return self.key_id or None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(store: Store, name: str, *, admin: bool = False) -> tuple[str, str]:
    """Make a key named `name` (`admin`: it sees every tenant's jobs); returns (id, key). Only the key's
    digest is stored: show it now or lose it."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = secrets.token_hex(8)
    with store.session() as session:
        session.add(ApiKey(id=key_id, name=name, key_hash=key_digest(key), created_at=utcnow(), admin=admin))
    return key_id, key


def list_keys(store: Store) -> list[KeyView]:
    with store.read() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()
    return [KeyView(r.id, r.name, r.created_at, r.revoked_at, r.admin) for r in rows]


def revoke_key(store: Store, key_id: str) -> None:
    """Revoke a key by id (revoking twice is fine).

    Raises:
        InvalidInput: no key has this id.
    """
    with store.session() as session:
        if session.get(ApiKey, key_id) is None:
            raise InvalidInput(f"no such API key: {key_id}")
        session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                        .values(revoked_at=utcnow()))


def read_keys_file(path: Path) -> dict[str, str]:
    """Digest -> key id of every key in `path`.

    Raises:
        InvalidInput: the file cannot be read (named, without its contents).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"cannot read the API keys file {path}: {type(err).__name__}") from err
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return {key_digest(k): FILE_KEY_PREFIX + key_digest(k)[:8] for k in keys}


def check_key(store: Store, key: str, file_keys: dict[str, str]) -> Caller | None:
    """The caller holding the valid, unrevoked key `key` (keys from the file are tenants), or None."""
    digest = key_digest(key)
    for known, key_id in file_keys.items():
        if hmac.compare_digest(known, digest):
            return Caller(key_id, admin=False)
    with store.read() as session:
        row = session.execute(select(ApiKey.id, ApiKey.revoked_at, ApiKey.admin)
                              .where(ApiKey.key_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        return None
    return Caller(str(row.id), admin=bool(row.admin))
