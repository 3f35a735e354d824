"""`ttsfleet serve`: the application under uvicorn."""

from __future__ import annotations

from schemas.db import open_store
from schemas.errors import InvalidInput
from schemas.settings import ServiceSettings
from service.context import is_loopback


def serve(settings: ServiceSettings) -> None:
    """Run until interrupted.

    Raises:
        InvalidInput: a non-loopback address with no API key anywhere (nobody could use it).
    """
    import uvicorn

    from service.app import create_app
    from service.keys import list_keys

    store = open_store(settings.database_url)
    if not is_loopback(settings.host) and not settings.api_keys_file \
            and not any(k.revoked_at is None for k in list_keys(store)):
        raise InvalidInput(f"serving on {settings.host} requires API keys: create one with `ttsfleet keys create "
                           "NAME` or set TTSFLEET_API_KEYS_FILE")
    app = create_app(settings, store)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", proxy_headers=False,
                server_header=False)
