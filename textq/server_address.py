"""Where a client on this machine finds the textq API: TEXTQ_URL, else where `textq api` listens."""

from __future__ import annotations

import os

from shared.config import Settings


def server_url(host: str, port: int) -> str:
    """Return the URL a client on this machine reaches a server listening on `host:port` at.

    A server listening on every interface (`0.0.0.0`, `::`, or an empty host) is reached
    on loopback; an IPv6 address is put in brackets. E.g. `("0.0.0.0", 8080)` gives
    `http://127.0.0.1:8080`.
    """
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def default_url(settings: Settings | None = None) -> str:
    """Return TEXTQ_URL, else where `textq api` on this machine listens by the same settings
    (TEXTQ_API_HOST, TEXTQ_API_PORT; 127.0.0.1:8000 unless set).

    Raises pydantic's ValidationError when a TEXTQ_ setting is malformed.
    """
    if url := os.environ.get("TEXTQ_URL"):
        return url
    settings = settings or Settings()
    return server_url(settings.api_host, settings.api_port)
