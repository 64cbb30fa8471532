"""Deliver a job's results to its `output_url`: JSON Lines (gzip if asked) PUT as a stream.

Runs in the webhooks process beside webhook deliveries, on the same durable mechanism: the
dispatcher leases due rows of `output_deliveries` (shared/jobs/output_delivery.py) and hands
each to a task that makes one attempt and records it; a failed attempt is due again on the
webhook retry schedule. The results are rendered into a temporary file first, so the PUT
carries a Content-Length (S3 and GCS presigned PUTs refuse chunked bodies) while memory
stays flat whatever the job's size.
"""

from __future__ import annotations

import gzip
import logging
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

import httpx
from celery import Celery

from shared.config import Settings
from shared.db import Database
from shared.jobs import output_delivery
from shared.jobs.result_lines import jsonl_pages
from shared.models import Job
from shared.states import JobStatus, Task
from shared.webhooks.targets import (
    Resolver,
    UnsafeWebhookUrl,
    allowed_networks,
    pinned,
    safe_addresses,
    system_resolver,
    url_host,
)
from worker.webhooks.delivery import next_attempt_at, receiver_client, retry_after_s

log = logging.getLogger(__name__)

OUTPUT_TASK = "textq.deliver_output"
_SPOOL_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class PutAnswer:
    """What one PUT got: a status code, or the error that stopped it."""

    status_code: int | None
    error: str | None = None
    retry_after_s: float | None = None


@dataclass
class OutputSender:
    """Makes one attempt at a job's output delivery and records what it got."""

    settings: Settings
    db: Database
    resolver: Resolver = system_resolver
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = receiver_client(self.settings)

    def close(self) -> None:
        """Close the connections kept open to receivers."""
        self.client.close()

    def deliver(self, job_id: str) -> str | None:
        """Attempt a delivery once; return its status after the attempt (None: not pending)."""
        with self.db.read() as session:
            pending = output_delivery.load_pending(session, uuid.UUID(job_id))
        if pending is None:
            return None
        job = pending.job
        if job.status == JobStatus.EXPIRED.value:
            answer = PutAnswer(None, error="the job's results expired before they were sent")
            outcome, next_at = output_delivery.FAILED, None
        else:
            with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as body:
                size = self._render(body, job, pending.gzip)
                answer = self._put(pending.url, body, size, pending.gzip)
            outcome, next_at = self._next(answer, attempts=pending.attempts + 1)
        with self.db.write() as session:
            output_delivery.record_attempt(
                session,
                job_id=job.id,
                outcome=outcome,
                error=answer.error,
                next_attempt_at=next_at,
            )
        log.info(
            "output of job %s to %s, attempt %d: %s -> %s",
            job.id,
            url_host(pending.url),  # never the URL: its query string is a signature
            pending.attempts + 1,
            answer.status_code or answer.error,
            outcome,
            extra={"action": "output_attempt", "job_id": str(job.id), "tenant": job.tenant_id},
        )
        return outcome

    def _render(self, body: IO[bytes], job: Job, compress: bool) -> int:
        """Write the job's results as JSON Lines into `body` (gzip if asked); return its size."""
        categories = bool((job.options or {}).get("categories"))
        pages = jsonl_pages(self.db, job.id, Task(job.task), categories=categories)
        if compress:
            with gzip.GzipFile(fileobj=body, mode="wb", mtime=0) as packed:
                for page in pages:
                    packed.write(page)
        else:
            for page in pages:
                body.write(page)
        size = body.tell()
        body.seek(0)
        return size

    def _put(self, url: str, body: IO[bytes], size: int, compressed: bool) -> PutAnswer:
        try:
            # Resolved again now, and sent to the address that was checked.
            addresses = safe_addresses(
                url,
                allowed=allowed_networks(self.settings),
                resolver=self.resolver,
                field="output_url",
            )
        except UnsafeWebhookUrl as error:
            return PutAnswer(None, error=error.detail)
        target, host = pinned(url, addresses[0])
        headers = {
            "host": host,
            "content-type": "application/gzip" if compressed else "application/x-ndjson",
            "content-length": str(size),
            "user-agent": "textq-output",
        }
        if host.endswith(".blob.core.windows.net"):  # Azure's PUT Blob needs the blob's type
            headers["x-ms-blob-type"] = "BlockBlob"
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        try:
            response = self.client.put(
                target,
                content=_chunks(body),
                headers=headers,
                extensions={"sni_hostname": hostname.strip("[]")},
            )
        except httpx.HTTPError as error:
            # httpx names the request's URL in some errors: keep the signature out.
            return PutAnswer(None, error=type(error).__name__ + ": " + _without_url(str(error)))
        retry_after = retry_after_s(response.headers.get("retry-after"))
        failure = None if response.is_success else f"HTTP {response.status_code}"
        return PutAnswer(response.status_code, error=failure, retry_after_s=retry_after)

    def _next(self, answer: PutAnswer, *, attempts: int) -> tuple[str, datetime | None]:
        """Return the delivery's status after an attempt, and when to try next."""
        code = answer.status_code
        if code is not None and 200 <= code < 300:
            return output_delivery.DELIVERED, None
        next_at = next_attempt_at(self.settings, code, answer.retry_after_s, attempts=attempts)
        return (
            (output_delivery.FAILED, None)
            if next_at is None
            else (output_delivery.PENDING, next_at)
        )


def _chunks(body: IO[bytes]) -> Iterator[bytes]:
    """Yield the spooled body in pieces: the PUT streams it, never holding it whole."""
    while piece := body.read(256 * 1024):
        yield piece


def _without_url(message: str) -> str:
    """Cut a query string out of an error message (`?` up to the next space or quote)."""
    return re.sub(r"\?[^\s'\"]*", "?…", message)


_sender: OutputSender | None = None


def install(sender: OutputSender) -> None:
    global _sender
    _sender = sender


def add_output_task(app: Celery) -> None:
    """Register the output delivery task on a Celery app."""

    @app.task(name=OUTPUT_TASK, ignore_result=True)
    def deliver_output(job_id: str) -> str | None:
        assert _sender is not None, "the webhooks process installs its output sender first"
        return _sender.deliver(job_id)
