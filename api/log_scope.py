"""Give every log line of a request (the access line included) the request's own fields."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.logs import log_scope


class RequestLogScope:
    """Opens a log scope per request; the key's tenant and the job id are bound into it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with log_scope(request_id=uuid.uuid4().hex[:16]):
            await self.app(scope, receive, send)
