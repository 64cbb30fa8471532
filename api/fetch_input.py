"""Fetch a batch's `input_url` into a temporary file, as an upload's bytes would arrive.

The URL is checked like a webhook's (shared/webhooks/targets.py) and the request goes to the
address that was checked, so a DNS answer that changes between the check and the fetch
cannot point it inward. The query string is sent verbatim and no credentials are added:
presigned GET URLs of S3, GCS and Azure carry their own signature. The body is streamed
to disk with the upload's byte limit; the rows are then read from there by api/uploads.py,
exactly as an upload's are. A fetch that fails raises InputFetchFailed before anything is
written.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import IO
from urllib.parse import unquote, urlsplit

import httpx

from shared.config import Settings
from shared.errors import RequestTooLarge, TextqError
from shared.webhooks.targets import (
    Resolver,
    allowed_networks,
    pinned,
    safe_addresses,
    system_resolver,
    url_host,
)

_SPOOL_BYTES = 1024 * 1024
_CHUNK_BYTES = 256 * 1024
# What a body may be encoded as in transit: gzip is read like a gzipped upload.
_ENCODINGS = {"", "identity", "gzip", "x-gzip"}


class InputFetchFailed(TextqError):
    """The input_url could not be fetched; nothing was stored."""

    status_code = 422
    problem_type = "input-fetch-failed"
    title = "Input URL fetch failed"


@dataclass
class FetchedInput:
    """A fetched input: its bytes in a temporary file (rewound), and the name to sniff."""

    file: IO[bytes]
    filename: str | None
    host: str


def check_input_url(url: str, settings: Settings, resolver: Resolver = system_resolver) -> None:
    """Raise UnsafeWebhookUrl (422) if `input_url` may not be fetched under these settings."""
    safe_addresses(url, allowed=allowed_networks(settings), resolver=resolver, field="input_url")


def check_output_url(url: str, settings: Settings, resolver: Resolver = system_resolver) -> None:
    """Raise UnsafeWebhookUrl (422) if `output_url` may not be sent to under these settings."""
    safe_addresses(url, allowed=allowed_networks(settings), resolver=resolver, field="output_url")


def fetch_input(url: str, settings: Settings, resolver: Resolver = system_resolver) -> FetchedInput:
    """GET `url` into a temporary file of at most TEXTQ_MAX_UPLOAD_BYTES; the caller closes it.

    Raise UnsafeWebhookUrl (422) for an address textq may not reach, RequestTooLarge (413)
    for a body over the limit, InputFetchFailed (422) for anything else that went wrong
    (a status other than 2xx, a timeout, a refused connection), naming the host and why.
    """
    host = url_host(url)
    addresses = safe_addresses(
        url, allowed=allowed_networks(settings), resolver=resolver, field="input_url"
    )
    target, host_header = pinned(url, addresses[0])
    hostname = urlsplit(url).hostname or ""
    spool = tempfile.SpooledTemporaryFile(_SPOOL_BYTES)  # noqa: SIM115 - handed to the caller
    try:
        with (
            httpx.Client(
                timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False
            ) as client,
            client.stream(
                "GET",
                target,
                headers={
                    "host": host_header,
                    "accept-encoding": "gzip",
                    "user-agent": "textq-input",
                },
                extensions={"sni_hostname": hostname},
            ) as response,
        ):
            _check_answer(response, host, settings.max_upload_bytes)
            size = 0
            # Raw bytes: a gzip Content-Encoding stays gzip, read like a .gz upload.
            for chunk in response.iter_raw(_CHUNK_BYTES):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise RequestTooLarge(
                        f"input_url on {host}: the file is over {settings.max_upload_bytes} "
                        "bytes, the limit (TEXTQ_MAX_UPLOAD_BYTES); nothing was stored."
                    )
                spool.write(chunk)
    except httpx.HTTPError as error:
        spool.close()
        raise InputFetchFailed(
            f"input_url on {host} could not be fetched: {_reason(error)}; nothing was stored. "
            "Give a URL this server can GET (http or https, a presigned URL works).",
            host=host,
        ) from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return FetchedInput(file=spool, filename=_filename(url), host=host)


def _check_answer(response: httpx.Response, host: str, limit: int) -> None:
    """Refuse a non-2xx answer, a declared size over the limit, an encoding not read."""
    if not response.is_success:
        what = "a redirect, which is not followed" if response.is_redirect else "not 2xx"
        raise InputFetchFailed(
            f"input_url on {host} answered HTTP {response.status_code} ({what}); "
            "nothing was stored. Give a URL that answers 200 with the file.",
            host=host,
            upstream_status=response.status_code,
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(
            f"input_url on {host}: the file is {declared} bytes; the limit is {limit} "
            "(TEXTQ_MAX_UPLOAD_BYTES); nothing was stored."
        )
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        raise InputFetchFailed(
            f"input_url on {host} sent Content-Encoding {encoding!r}; "
            "this server reads identity or gzip.",
            host=host,
        )


def _reason(error: httpx.HTTPError) -> str:
    """Say why a request failed without its URL (a presigned URL's query is a secret)."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.ConnectError):
        return "the connection was refused or failed"
    return type(error).__name__


def _filename(url: str) -> str | None:
    """Return the last segment of the URL's path (`feedback.csv.gz`), to tell the format by."""
    name = os.path.basename(unquote(urlsplit(url).path))
    return name or None
