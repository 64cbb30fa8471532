"""Bodies over their route's limit are refused with 413 while they arrive, not after."""

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from shared.states import Task
from tests.api.test_submit import problem
from tests.broker import published
from tests.e2e.processes import free_port

CHUNK = b"x" * 1024
BOUNDARY = "textq-test-boundary"


def json_head() -> bytes:
    return b'{"task": "sentiment", "input": {"text": "'


def upload_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="task"\r\n\r\nsentiment\r\n'
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="feedback.csv"\r\n'
        "Content-Type: text/csv\r\n\r\ntext\n"
    ).encode()


UPLOAD_TAIL = f"\n\r\n--{BOUNDARY}--\r\n".encode()
UPLOAD_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def test_uploads_have_their_own_larger_limit(client, api_settings):
    """A file past the request limit but within the upload limit is an ordinary upload."""
    size = api_settings.max_request_bytes * 4
    assert size < api_settings.max_upload_bytes
    response = client.post(
        "/v1/batches",
        content=upload_head() + b"x" * size + UPLOAD_TAIL,
        headers={"content-type": UPLOAD_TYPE},
    )
    # The one long row is an error of its own (over TEXTQ_MAX_TEXT_CHARS), not of the file.
    assert response.status_code == 202, response.text
    assert response.json()["progress"]["errored"] == 1


@pytest.mark.parametrize("path", ["/v1/jobs", "/analyze", "/v1/webhooks/secret/rotate"])
def test_a_declared_length_over_the_limit_is_refused_unread(client, api_settings, path):
    response = client.post(
        path,
        content=b"{}",
        headers={"content-length": str(api_settings.max_request_bytes + 1)},
    )
    assert problem(response, 413, "request-too-large")["instance"] == path


@pytest.fixture
def server_port(api_settings) -> Iterator[int]:
    """The API behind a real uvicorn on loopback, so requests travel as HTTP/1.1 bytes."""
    port = free_port()
    config = uvicorn.Config(
        create_app(api_settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(30)


def send_chunked_past(port: int, path: str, content_type: str, head: bytes, limit: int) -> bytes:
    """Send a chunked body (no Content-Length) just past `limit`, never its last chunk.

    Return the server's answer: it can only come before the body ends.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        for _ in range(limit // len(CHUNK) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head_lines, _, body = answer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head_lines).group(1))
        while len(body) < length:
            body += sock.recv(65536)
    return head_lines + b"\r\n\r\n" + body


@pytest.mark.parametrize(
    ("path", "content_type", "head", "setting"),
    [
        ("/v1/jobs", "application/json", json_head(), "max_request_bytes"),
        ("/v1/batches", UPLOAD_TYPE, upload_head(), "max_upload_bytes"),
    ],
    ids=["json", "upload"],
)
def test_a_chunked_body_over_the_limit_is_413_while_the_client_still_sends(
    server_port, api_settings, stored_rows, path, content_type, head, setting
):
    limit = getattr(api_settings, setting)
    answer = send_chunked_past(server_port, path, content_type, head, limit)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 "), answer[:2000]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in headers.lower()
    refused = json.loads(body)
    assert refused["type"] == "/problems/request-too-large"
    assert refused["status"] == 413
    assert refused["instance"] == path
    assert f"TEXTQ_{setting.upper()}" in refused["detail"]
    assert stored_rows() == (0, 0)
    assert published(api_settings, Task.SENTIMENT) == []
