"""A real HTTP server on loopback for input_url / output_url tests: serves files, takes PUTs."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from tests.loopback_http import QuietHandler, serve, stop_server


@dataclass
class Request:
    method: str
    path: str  # with its query string, as received
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    """What a GET of a path answers: status, headers, body (no Content-Length: streamed)."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True


@dataclass
class FileServer:
    """Answers GETs from `files` (by path, query aside) and PUTs with the planned statuses,
    then 200s; records every request."""

    files: dict[str, Served] = field(default_factory=dict)
    fallback: Served | None = None  # what a path not in `files` gets (None: a 404)
    planned_puts: deque[int] = field(default_factory=deque)
    received: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        assert self.server is not None
        return f"http://{host}:{self.server.server_address[1]}{path}"

    @property
    def puts(self) -> list[Request]:
        return [r for r in self.received if r.method == "PUT"]

    def start(self) -> FileServer:
        owner = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _record(self, body: bytes) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.received.append(Request(self.command, self.path, headers, body))

            def do_GET(self) -> None:
                self._record(b"")
                served = owner.files.get(self.path.split("?")[0], owner.fallback)
                if served is None:
                    served = Served(b"not found", status=404)
                self.send_response(served.status)
                for name, value in served.headers.items():
                    self.send_header(name, value)
                if served.content_length:
                    self.send_header("content-length", str(len(served.body)))
                else:
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(served.body)

            def do_PUT(self) -> None:
                self._record(self.rfile.read(int(self.headers.get("content-length", "0"))))
                status = owner.planned_puts.popleft() if owner.planned_puts else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = serve(Handler)
        return self

    def stop(self) -> None:
        stop_server(self.server)
