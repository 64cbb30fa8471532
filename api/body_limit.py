"""Refuse a request body as soon as it passes its route's limit, before anything reads it whole.

Starlette sets no limit: it spools a multipart upload to disk, and reads a chunked body
(no Content-Length), to the end before a route could look at its size. This middleware
counts the bytes as they arrive instead.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from shared.errors import RequestTooLarge

# Routes whose bodies are files, held to TEXTQ_MAX_UPLOAD_BYTES instead.
UPLOAD_PATHS = frozenset({"/v1/batches"})


class BodyLimit:
    """Answers 413 once a request's body passes its route's limit."""

    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        """Return the body limit of the request's route, and the setting that sets it."""
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path.rstrip("/") in UPLOAD_PATHS:
            return self.max_upload_bytes, "TEXTQ_MAX_UPLOAD_BYTES"
        return self.max_request_bytes, "TEXTQ_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            too_large = RequestTooLarge(
                f"The body is {declared} bytes; the limit is {limit} ({setting})."
            )
            await error_response(too_large, instance=scope["path"])(scope, receive, send)
            return

        received_bytes = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > limit:
                    # Raised where the app reads, so its error handler answers (and the
                    # form parser closes the part of the file it had spooled).
                    raise RequestTooLarge(
                        f"The body is over the limit of {limit} bytes ({setting})."
                    )
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except RequestTooLarge as error:
            # Read somewhere the app's handlers do not reach (e.g. a background task).
            if response_started:
                raise
            await error_response(error, instance=scope["path"])(scope, receive, send)
