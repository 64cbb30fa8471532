"""`/ui`: the web page for submitting jobs and reading their results (static files).

The page calls the public API with the user's key from the browser, so it needs no
server-side session; the strict Content-Security-Policy keeps anything but this server's own
scripts and requests out of it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class UiFiles(StaticFiles):
    """The page's files, each answered with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        # A new release's script must not meet an old cached page.
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def mount(app: FastAPI) -> None:
    """Serve the page at `/ui/`; `/` and `/ui` lead there."""

    @app.get("/", include_in_schema=False)
    @app.get("/ui", include_in_schema=False)
    def to_ui() -> RedirectResponse:
        return RedirectResponse("ui/")

    app.mount("/ui", UiFiles(directory=UI_DIR, html=True), name="ui")
