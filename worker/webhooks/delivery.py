"""Deliver webhook events: signed POSTs to public addresses, retried on a schedule for a day.

Events are rows written with the job change they report; the dispatcher leases the due ones
and hands each to a Celery task, which makes one attempt and records it. A lost message or
a killed sender only delays an event: its lease lapses and it is due again.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
from celery import Celery

from shared.broker import WEBHOOK_TASK
from shared.config import Settings
from shared.db import Database
from shared.jobs import output_delivery
from shared.jobs.presenting import present_job
from shared.metrics import WEBHOOK_ATTEMPTS
from shared.models import utcnow
from shared.webhooks import events as webhook_events
from shared.webhooks import signing
from shared.webhooks.targets import (
    Resolver,
    UnsafeWebhookUrl,
    allowed_networks,
    pinned,
    safe_addresses,
    system_resolver,
)

log = logging.getLogger(__name__)

RETRY_AFTER_STATUSES = {429, 502, 504}
MAX_RETRY_AFTER_S = 24 * 3600
JITTER = 0.1
# Covers a delivery task's wait in the queue and its attempt; an event whose task was lost
# with the broker's queue is due again after this long.
LEASE_S = 60.0
# An output delivery renders and PUTs a whole job's results: a longer lease.
OUTPUT_LEASE_S = 600.0


@dataclass(frozen=True)
class Answer:
    """What one attempt got: a status code, or the error that stopped it."""

    status_code: int | None
    latency_ms: int
    error: str | None = None
    retry_after_s: float | None = None


@dataclass
class WebhookSender:
    """Makes one attempt at an event and records what it got."""

    settings: Settings
    db: Database
    resolver: Resolver = system_resolver
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = receiver_client(self.settings)

    def deliver(self, event_id: str) -> str | None:
        """Attempt an event once; return its status after the attempt (None: not pending)."""
        with self.db.write() as session:
            delivery = webhook_events.load_delivery(session, event_id)
            if delivery is not None and delivery.url_disabled:
                webhook_events.mark_disabled(session, event_id)
                return webhook_events.DISABLED
        if delivery is None:
            return None
        body = json.dumps(
            {
                "type": delivery.event_type,
                # The event's own time, so every attempt of an event sends the same bytes.
                "timestamp": delivery.occurred_at.isoformat().replace("+00:00", "Z"),
                "data": present_job(delivery.job, self.settings.public_url).model_dump(mode="json"),
            },
            separators=(",", ":"),
        ).encode()
        answer = self._send(delivery.url, delivery.event_id, body, delivery.secrets)
        outcome, next_at = self._next(answer, attempts=delivery.attempts + 1)
        with self.db.write() as session:
            webhook_events.record_attempt(
                session,
                event_id=event_id,
                status_code=answer.status_code,
                latency_ms=answer.latency_ms,
                error=answer.error,
                outcome=outcome,
                next_attempt_at=next_at,
            )
            if answer.status_code == 410:
                webhook_events.disable_url(
                    session, tenant_id=delivery.job.tenant_id, url=delivery.url
                )
        WEBHOOK_ATTEMPTS.labels(outcome=_attempt_outcome(answer)).inc()
        log.info(
            "webhook %s attempt %d: %s -> %s",
            event_id,
            delivery.attempts + 1,
            answer.status_code or answer.error,
            outcome,
            extra={
                "action": "webhook_attempt",
                "job_id": str(delivery.job.id),
                "tenant": delivery.job.tenant_id,
            },
        )
        return outcome

    def _send(self, url: str, event_id: str, body: bytes, secrets: list[str]) -> Answer:
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            # Resolved again now, and the request goes to the address that was checked,
            # so a DNS answer that changed since submit cannot point it inward.
            addresses = safe_addresses(
                url,
                allowed=allowed_networks(self.settings),
                resolver=self.resolver,
            )
        except UnsafeWebhookUrl as error:
            return Answer(None, elapsed_ms(), error=error.detail)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "textq-webhooks",
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(
                secrets, message_id=event_id, timestamp=timestamp, body=body
            ),
        }
        target, host = pinned(url, addresses[0])
        try:
            response = self.client.post(
                target,
                content=body,
                headers=headers | {"host": host},
                extensions={"sni_hostname": urlsplit(url).hostname or ""},
            )
        except httpx.HTTPError as error:
            return Answer(None, elapsed_ms(), error=f"{type(error).__name__}: {error}")
        retry_after = retry_after_s(response.headers.get("retry-after"))
        failure = None if response.is_success else f"HTTP {response.status_code}"
        return Answer(response.status_code, elapsed_ms(), error=failure, retry_after_s=retry_after)

    def _next(self, answer: Answer, *, attempts: int) -> tuple[str, datetime | None]:
        """Return the event's status after an attempt, and when to try next."""
        code = answer.status_code
        if code is not None and 200 <= code < 300:
            return webhook_events.DELIVERED, None
        if code == 410:
            return webhook_events.DISABLED, None
        next_at = next_attempt_at(self.settings, code, answer.retry_after_s, attempts=attempts)
        return (
            (webhook_events.FAILED, None) if next_at is None else (webhook_events.PENDING, next_at)
        )


def receiver_client(settings: Settings) -> httpx.Client:
    """Return the HTTP client deliveries are made with: the webhook timeout, no proxies from
    the environment, and no redirects (a 3xx is a failed attempt, never a second place)."""
    return httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False)


def next_attempt_at(
    settings: Settings, status_code: int | None, retry_after: float | None, *, attempts: int
) -> datetime | None:
    """Return when to try a failed delivery again after `attempts` of them, None when the
    retry schedule (TEXTQ_WEBHOOK_RETRY_SCHEDULE_S, Standard Webhooks') is spent.

    Each delay is jittered by ±JITTER; a 429 or 503 with Retry-After waits what it asks
    (up to MAX_RETRY_AFTER_S) instead.
    """
    schedule = settings.webhook_retry_delays_s
    if attempts >= len(schedule):
        return None
    delay = schedule[attempts] * random.uniform(1 - JITTER, 1 + JITTER)
    if status_code in RETRY_AFTER_STATUSES and retry_after is not None:
        delay = min(retry_after, MAX_RETRY_AFTER_S)
    return utcnow() + timedelta(seconds=delay)


def _attempt_outcome(answer: Answer) -> str:
    """Return `2xx`..`5xx` by the receiver's status, or `error` if none came back."""
    if answer.status_code is None:
        return "error"
    return f"{answer.status_code // 100}xx"


def retry_after_s(value: str | None) -> float | None:
    """Return a Retry-After header (seconds, or an HTTP date) as seconds from now."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max((parsedate_to_datetime(value) - utcnow()).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


class Dispatcher(threading.Thread):
    """Leases due events every second and publishes a delivery task for each."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        publish: Callable[[str], None],
        publish_output: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="textq-webhook-dispatcher", daemon=True)
        self.settings, self.db, self.publish = settings, db, publish
        self.publish_output = publish_output
        self._stopping = threading.Event()

    def dispatch_once(self) -> int:
        """Publish every due event and output delivery once; return how many."""
        outputs = self._dispatch_outputs() if self.publish_output is not None else 0
        with self.db.read() as session:
            if not webhook_events.has_due_events(session):
                return outputs
        with self.db.write() as session:
            due = webhook_events.claim_due_events(session, limit=500, lease_s=LEASE_S)
        for published, event_id in enumerate(due):
            try:
                self.publish(event_id)
            except Exception:
                with self.db.write() as session:
                    webhook_events.release_events(session, due[published:])
                raise
        return outputs + len(due)

    def _dispatch_outputs(self) -> int:
        """Publish every due output delivery (shared/jobs/output_delivery.py) once."""
        assert self.publish_output is not None
        with self.db.read() as session:
            if not output_delivery.has_due_deliveries(session):
                return 0
        with self.db.write() as session:
            due = output_delivery.claim_due_deliveries(session, limit=100, lease_s=OUTPUT_LEASE_S)
        for published, job_id in enumerate(due):
            try:
                self.publish_output(str(job_id))
            except Exception:
                with self.db.write() as session:
                    output_delivery.release_deliveries(session, due[published:])
                raise
        return len(due)

    def run(self) -> None:
        while not self._stopping.wait(1.0):
            try:
                self.dispatch_once()
            except Exception as error:  # tried again in a second
                log.warning("webhook dispatch failed: %s", error, extra={"action": "dispatch"})

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


_sender: WebhookSender | None = None


def install(sender: WebhookSender) -> None:
    global _sender
    _sender = sender


def add_delivery_task(app: Celery) -> None:
    """Register the delivery task on a Celery app."""

    @app.task(name=WEBHOOK_TASK, ignore_result=True)
    def deliver_webhook(event_id: str) -> str | None:
        assert _sender is not None, "the webhooks process installs its sender first"
        return _sender.deliver(event_id)
