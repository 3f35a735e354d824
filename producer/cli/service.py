"""`ttsfleet serve` (the HTTP service) and `ttsfleet keys create | list | revoke` (its API keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producer.cli.common import BrokerUrlOpt, DatabaseUrlOpt, JsonOpt, VoiceDirsOpt, VoiceOpt, environ, print_json

keys_app = typer.Typer(help="API keys of the HTTP service (stored hashed; a key is shown once).",
                       no_args_is_help=True)


def _opt(flag: str, help_text: str) -> typer.models.OptionInfo:
    """An option named `--x-y` read from TTSFLEET_X_Y too (every setting has both)."""
    name = flag.split("/")[0].lstrip("-").replace("-", "_").upper()
    return typer.Option(flag, envvar=f"TTSFLEET_{name}", show_envvar=True, help=help_text)


def serve(
    host: Annotated[str | None, _opt("--host", "address to bind (default 127.0.0.1); any other than loopback "
                                              "requires API keys")] = None,
    port: Annotated[int | None, _opt("--port", "port (default 8000)")] = None,
    require_api_keys: Annotated[bool | None, _opt("--require-api-keys/--no-require-api-keys",
                                                          "require keys on loopback too")] = None,
    api_keys_file: Annotated[Path | None, _opt("--api-keys-file", "extra keys, one a line")] = None,
    webhook_secret: Annotated[str | None, _opt("--webhook-secret", "HMAC-SHA256 key signing webhooks")] = None,
    max_upload_bytes: Annotated[int | None, _opt("--max-upload-bytes", "larger job submissions get 413 "
                                                                        "(default 10 MB)")] = None,
    max_body_bytes: Annotated[int | None, _opt("--max-body-bytes", "larger bodies on other routes get 413 "
                                                                    "(default 1 MB)")] = None,
    client_timeout_s: Annotated[float | None, _opt("--client-timeout-s", "a request's head, then its body, must "
                                                                          "arrive within this (default 60)")] = None,
    callback_allow_networks: Annotated[str | None, _opt("--callback-allow-networks", "CIDRs callbacks may reach "
                                                                                      "though not public")] = None,
    allow_hub_voices: Annotated[bool | None, _opt("--allow-hub-voices/--no-allow-hub-voices",
                                                  "accept hf: voices that workers must download")] = None,
    max_queued_per_key: Annotated[int | None, _opt("--max-queued-per-key", "queued+running jobs per key "
                                                                          "(default 1000)")] = None,
    cors_origins: Annotated[str | None, _opt("--cors-origins", "comma-separated origins; empty: CORS off")] = None,
    speech_timeout_s: Annotated[float | None, _opt("--speech-timeout-s", "how long /v1/audio/speech waits "
                                                                        "(default 60)")] = None,
    speech_sync_max_chars: Annotated[int | None, _opt("--speech-sync-max-chars", "longer speech input gets 202 "
                                                                                "(default 2000)")] = None,
    broker_url: BrokerUrlOpt = None, database_url: DatabaseUrlOpt = None, voice: VoiceOpt = None,
    voice_dirs: VoiceDirsOpt = None,
) -> None:
    """Serve the HTTP API, the OpenAI-compatible speech endpoint and the dashboard (stateless: run many)."""
    from schemas.settings import ServiceSettings
    from service.server import serve as run_server

    settings = ServiceSettings.from_env(
        environ(), host=host, port=port, require_api_keys=require_api_keys, api_keys_file=api_keys_file,
        webhook_secret=webhook_secret, max_upload_bytes=max_upload_bytes, max_queued_per_key=max_queued_per_key,
        max_body_bytes=max_body_bytes, client_timeout_s=client_timeout_s,
        callback_allow_networks=callback_allow_networks, allow_hub_voices=allow_hub_voices,
        cors_origins=cors_origins, speech_timeout_s=speech_timeout_s, speech_sync_max_chars=speech_sync_max_chars,
        broker_url=broker_url, database_url=database_url, voice=voice, voice_dirs=voice_dirs)
    run_server(settings)


def _store(database_url: str | None):  # type: ignore[no-untyped-def]
    from schemas.db import open_store
    from schemas.settings import ProducerSettings

    return open_store(ProducerSettings.from_env(environ(), database_url=database_url).database_url)


@keys_app.command("create")
def create(name: Annotated[str, typer.Argument(help="who the key is for")],
           admin: Annotated[bool, typer.Option("--admin", help="the key sees every tenant's jobs")] = False,
           as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None) -> None:
    """Create a key and print it (only its hash is stored: it cannot be shown again). A key sees only the
    jobs it submitted; an --admin key sees every job."""
    from service.keys import create_key

    key_id, key = create_key(_store(database_url), name, admin=admin)
    if as_json:
        print_json({"id": key_id, "name": name, "key": key, "admin": admin})
    else:
        typer.echo(f"{key_id}  {key}")


@keys_app.command("list")
def list_(as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None) -> None:
    """The keys: id, name, created, revoked (never the keys themselves)."""
    from service.keys import list_keys

    views = list_keys(_store(database_url))
    if as_json:
        print_json([{"id": v.id, "name": v.name, "admin": v.admin, "created_at": v.created_at.isoformat() + "Z",
                     "revoked_at": v.revoked_at.isoformat() + "Z" if v.revoked_at else None} for v in views])
        return
    for v in views:
        typer.echo(f"{v.id}  {v.name}{'  admin' if v.admin else ''}  created {v.created_at:%Y-%m-%d %H:%M}Z"
                   + (f"  revoked {v.revoked_at:%Y-%m-%d %H:%M}Z" if v.revoked_at else ""))


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key's id (keys list)")],
           database_url: DatabaseUrlOpt = None) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from service.keys import revoke_key

    revoke_key(_store(database_url), key_id)
    typer.echo(f"revoked {key_id}")
