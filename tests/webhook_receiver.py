"""A real HTTP receiver on loopback for webhook tests: records requests, answers as told."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from tests.loopback_http import QuietHandler, serve, stop_server


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next planned (status, headers), then 200s."""

    port: int = 0
    planned: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/textq"

    def start(self) -> Receiver:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status, headers = receiver.planned.popleft() if receiver.planned else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = serve(Handler, self.port)
        return self

    def stop(self) -> None:
        stop_server(self.server)
