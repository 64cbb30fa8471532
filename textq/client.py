"""Python clients of the textq API: `Client` (blocking) and `AsyncClient`, both on httpx.

    from textq.client import Client
    with Client("http://127.0.0.1:8000", api_key="tq_...") as textq:
        job = textq.wait(textq.submit("sentiment", texts=["I love it", "meh"]).id)
        for row in textq.results(job.id):
            print(row)

Both retry 429 and 503 answers (and broken connections) as the server asks with
Retry-After, and send every submit with an Idempotency-Key, so a retry never makes a second
job. The URL defaults to TEXTQ_URL, else where `textq api` listens by TEXTQ_API_HOST and
TEXTQ_API_PORT; the key to TEXTQ_API_KEY.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from shared.model_schemas import ModelRead, ShadowReport
from shared.schemas import JobRead
from shared.states import TERMINAL_JOB_STATUSES, JobStatus
from textq.server_address import default_url

RETRYABLE_STATUSES = {429, 502, 503, 504}
MAX_LONG_POLL_S = 60.0
EVENTS_READ_TIMEOUT_S = 45.0
RESULTS_FIRST_PAUSE_S = 0.1
RESULTS_MAX_PAUSE_S = 2.0


Job = JobRead


class TextqError(Exception):
    """An answer the API gave instead of what was asked: its status and problem details."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title", "error"))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.title}: {self.detail}".rstrip(": "))


class JobTimeout(TimeoutError):
    """`wait` gave up before the job finished; `job` is how it last looked."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id} still {job.status.value} after the timeout")


class InvalidApiKey(ValueError):
    """The API key has a character no HTTP header can carry (say, a pasted placeholder)."""


def _headers(api_key: str | None) -> dict[str, str]:
    """Return the Authorization header for a key (`api_key`, else TEXTQ_API_KEY), if any.

    Raises InvalidApiKey, naming the first character and its position, for a key that is
    not printable ASCII without spaces: httpx would only fail later, at the first request,
    with a UnicodeEncodeError that does not say which setting is wrong.
    """
    source = "api_key" if api_key is not None else "TEXTQ_API_KEY"
    key = api_key if api_key is not None else os.environ.get("TEXTQ_API_KEY")
    if not key:
        return {}
    for position, char in enumerate(key):
        if "!" <= char <= "~":
            continue
        what = "a space" if char == " " else f"{char!r} (U+{ord(char):04X})"
        raise InvalidApiKey(
            f"{source} cannot be sent in an HTTP header: it has {what} at position "
            f"{position}; a textq key is printable ASCII, tq_ and two parts, as "
            "`textq keys create` prints it"
        )
    return {"Authorization": f"Bearer {key}"}


def _job_body(
    task: str,
    text: str | None,
    texts: list[str] | None,
    document: str | None,
    options: dict[str, Any] | None,
    priority: int | None,
    webhook_url: str | None,
    model: str | None = None,
) -> dict[str, Any]:
    given = [
        name
        for name, value in (("text", text), ("texts", texts), ("document", document))
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError("give exactly one of text, texts or document")
    value = {"text": text, "texts": texts, "document": document}[given[0]]
    body: dict[str, Any] = {"task": task, "input": {given[0]: value}}
    if model:
        body["model"] = model
    if options:
        body["options"] = options
    if priority is not None:
        body["priority"] = priority
    if webhook_url:
        body["webhook_url"] = webhook_url
    return body


def _batch_form(
    task: str,
    text_column: str | None,
    id_column: str | None,
    options: dict[str, Any] | None,
    model: str | None = None,
) -> dict[str, str]:
    form = {"task": task}
    if model:
        form["model"] = model
    if text_column:
        form["text_column"] = text_column
    if id_column:
        form["id_column"] = id_column
    if options:
        form["options"] = json.dumps(options)
    return form


def _retry_body(deadline: datetime | str | None) -> dict[str, Any]:
    if deadline is None:
        return {}
    return {"deadline": deadline.isoformat() if isinstance(deadline, datetime) else deadline}


def _retry_after_s(response: httpx.Response, attempt: int) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return min(0.5 * 2**attempt, 10.0)


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase, "detail": response.text[:500]}
        raise TextqError(response.status_code, problem)
    return response.json() if response.content else None


class _ResultsPause:
    """How long to wait before reading a running job's next results: none while full pages
    come, then from 0.1 s doubling to 2 s while its texts are still running."""

    def __init__(self) -> None:
        self._next_s = RESULTS_FIRST_PAUSE_S

    def after(self, page: dict[str, Any], page_size: int) -> float:
        if not page.get("partial") or len(page["items"]) >= page_size:
            self._next_s = RESULTS_FIRST_PAUSE_S
            return 0.0
        pause, self._next_s = self._next_s, min(self._next_s * 2, RESULTS_MAX_PAUSE_S)
        return pause


def is_finished(job: Job) -> bool:
    """Say whether a job has reached a status it never leaves (but for expiring)."""
    return JobStatus(job.status) in TERMINAL_JOB_STATUSES


class Client:
    """A blocking client of one textq server."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self._http = httpx.Client(
            base_url=url or default_url(),
            headers=_headers(api_key),
            timeout=timeout_s + MAX_LONG_POLL_S,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(min(0.5 * 2**attempt, 10.0))
                continue
            if response.status_code in RETRYABLE_STATUSES and attempt < self.retries:
                time.sleep(_retry_after_s(response, attempt))
                continue
            return _answer(response)
        raise AssertionError("unreachable")

    def submit(
        self,
        task: str,
        text: str | None = None,
        *,
        texts: list[str] | None = None,
        document: str | None = None,
        options: dict[str, Any] | None = None,
        priority: int | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> Job:
        """Submit a job of one text, a list of texts, or a long document.

        `model` is a catalogue name (`models()` lists them); None: the task's default.
        """
        body = _job_body(task, text, texts, document, options, priority, webhook_url, model)
        key = idempotency_key or uuid.uuid4().hex
        data = self._request("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
        return Job.model_validate(data)

    def upload_batch(
        self,
        path: str | Path,
        *,
        task: str = "sentiment",
        text_column: str | None = None,
        id_column: str | None = None,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> Job:
        """Upload a CSV or JSONL file (gzip too) as one job, a row per text (`model`: a
        catalogue name; None: the task's default)."""
        key = idempotency_key or uuid.uuid4().hex
        file = Path(path)
        with file.open("rb") as handle:
            data = self._request(
                "POST",
                "/v1/batches",
                files={"file": (file.name, handle)},
                data=_batch_form(task, text_column, id_column, options, model),
                headers={"Idempotency-Key": key},
            )
        return Job.model_validate(data)

    def models(self) -> list[ModelRead]:
        """Return the catalogue's models: name, task, source, revisions, serving workers."""
        return [ModelRead.model_validate(m) for m in self._request("GET", "/v1/models")["models"]]

    def shadow(self, name: str, *, window_h: float = 24) -> ShadowReport:
        """Return how the default `name` and its shadow candidate (or the candidate `name`
        and its default) compared on this key's texts over the last `window_h` hours.

        Raises ApiError (404) when `name` takes part in no shadow comparison.
        """
        found = self._request(
            "GET", f"/v1/models/{quote(name, safe='')}/shadow", params={"window_h": window_h}
        )
        return ShadowReport.model_validate(found)

    def get(self, job_id: str | uuid.UUID, *, wait_s: float = 0) -> Job:
        params = {"wait_s": wait_s} if wait_s else {}
        return Job.model_validate(self._request("GET", f"/v1/jobs/{job_id}", params=params))

    def wait(self, job_id: str | uuid.UUID, *, timeout_s: float | None = None) -> Job:
        """Return the job once it has finished, long-polling the server (JobTimeout if not)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        job = self.get(job_id)
        while not is_finished(job):
            left = MAX_LONG_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(job)
            job = self.get(job_id, wait_s=min(left, MAX_LONG_POLL_S))
        return job

    def results(self, job_id: str | uuid.UUID, *, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Yield the job's results in input order, a page at a time; of a job still running,
        those finished so far and then the rest as they finish, until it ends."""
        cursor: str | None = None
        pause = _ResultsPause()
        while True:
            params: dict[str, Any] = {"limit": page_size} | ({"cursor": cursor} if cursor else {})
            page = self._request("GET", f"/v1/jobs/{job_id}/results", params=params)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return
            time.sleep(pause.after(page, page_size))

    def export(
        self, job_id: str | uuid.UUID, *, format: str = "jsonl", follow: bool = False
    ) -> Iterator[bytes]:
        """Stream a finished job's results as `jsonl` or `csv` bytes (one request); with
        `follow`, a running job's rows as they finish, until it ends."""
        path = f"/v1/jobs/{job_id}/results"
        params = {"format": format} | ({"follow": "true"} if follow else {})
        # A followed export may wait long between rows: no read timeout then.
        timeout = httpx.Timeout(30.0, read=None) if follow else self._http.timeout
        with self._http.stream("GET", path, params=params, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                _answer(response)
            yield from response.iter_bytes()

    def events(
        self,
        job_id: str | uuid.UUID,
        *,
        results: bool = False,
        last_event_id: str | None = None,
    ) -> Iterator[tuple[str, dict[str, Any], str]]:
        """Yield the job's Server-Sent Events as (name, data, id) until the stream ends.

        Names: `progress` (data: `job_id`, `status`, `progress`, `queue`), `result` (data:
        `items`, with `results=True`) and last `finished`. Pass the last id received as
        `last_event_id` to resume after a dropped stream. Raises TextqError for a problem
        answer (404 for an unknown job) and httpx errors for a broken connection.
        """
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        path = f"/v1/jobs/{job_id}/events"
        # Reads wait at most for the 15 s keep-alive comments, with room to spare.
        timeout = httpx.Timeout(30.0, read=EVENTS_READ_TIMEOUT_S)
        params = {"results": "true"} if results else {}
        with self._http.stream(
            "GET", path, params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                response.read()
                _answer(response)
            if response.status_code == 204:  # resumed after `finished`: nothing follows
                return
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    continue
                if "event" in fields and "data" in fields:
                    yield fields["event"], json.loads(fields["data"]), fields.get("id", "")
                fields = {}

    def cancel(self, job_id: str | uuid.UUID) -> Job:
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel"))

    def retry(self, job_id: str | uuid.UUID, *, deadline: datetime | str | None = None) -> Job:
        """Run a partial or failed job's failed texts again; return the job, running.

        `deadline` (an aware datetime or an RFC 3339 string) replaces the job's. Raises
        TextqError (409) when there is nothing to retry, saying why; after a connection
        broken mid-answer, the client's own second try may be that 409 (`running`) for a
        retry that took effect: read the job to know.
        """
        return Job.model_validate(
            self._request("POST", f"/v1/jobs/{job_id}/retry", json=_retry_body(deadline))
        )

    def jobs(self, *, status: str | None = None, limit: int = 50) -> list[Job]:
        """Return the newest jobs (of one status, if given)."""
        return self.jobs_page(status=status, limit=limit)[0]

    def jobs_page(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Return up to `limit` jobs, newest first, after `cursor` if given, and the cursor of
        the next page (None when no job is left)."""
        params: dict[str, Any] = (
            {"limit": limit}
            | ({"status": status} if status else {})
            | ({"cursor": cursor} if cursor else {})
        )
        page = self._request("GET", "/v1/jobs", params=params)
        return [Job.model_validate(item) for item in page["items"]], page["next_cursor"]


class AsyncClient:
    """The same client for asyncio code."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self._http = httpx.AsyncClient(
            base_url=url or default_url(),
            headers=_headers(api_key),
            timeout=timeout_s + MAX_LONG_POLL_S,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(min(0.5 * 2**attempt, 10.0))
                continue
            if response.status_code in RETRYABLE_STATUSES and attempt < self.retries:
                await asyncio.sleep(_retry_after_s(response, attempt))
                continue
            return _answer(response)
        raise AssertionError("unreachable")

    async def submit(
        self,
        task: str,
        text: str | None = None,
        *,
        texts: list[str] | None = None,
        document: str | None = None,
        options: dict[str, Any] | None = None,
        priority: int | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> Job:
        body = _job_body(task, text, texts, document, options, priority, webhook_url, model)
        key = idempotency_key or uuid.uuid4().hex
        data = await self._request("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
        return Job.model_validate(data)

    async def upload_batch(
        self,
        path: str | Path,
        *,
        task: str = "sentiment",
        text_column: str | None = None,
        id_column: str | None = None,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> Job:
        key = idempotency_key or uuid.uuid4().hex
        file = Path(path)
        data = await self._request(
            "POST",
            "/v1/batches",
            files={"file": (file.name, file.read_bytes())},
            data=_batch_form(task, text_column, id_column, options, model),
            headers={"Idempotency-Key": key},
        )
        return Job.model_validate(data)

    async def models(self) -> list[ModelRead]:
        """Return the catalogue's models: name, task, source, revisions, serving workers."""
        found = await self._request("GET", "/v1/models")
        return [ModelRead.model_validate(m) for m in found["models"]]

    async def get(self, job_id: str | uuid.UUID, *, wait_s: float = 0) -> Job:
        params = {"wait_s": wait_s} if wait_s else {}
        return Job.model_validate(await self._request("GET", f"/v1/jobs/{job_id}", params=params))

    async def wait(self, job_id: str | uuid.UUID, *, timeout_s: float | None = None) -> Job:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        job = await self.get(job_id)
        while not is_finished(job):
            left = MAX_LONG_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(job)
            job = await self.get(job_id, wait_s=min(left, MAX_LONG_POLL_S))
        return job

    async def results(
        self, job_id: str | uuid.UUID, *, page_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the job's results in input order, as `Client.results` does."""
        cursor: str | None = None
        pause = _ResultsPause()
        while True:
            params: dict[str, Any] = {"limit": page_size} | ({"cursor": cursor} if cursor else {})
            page = await self._request("GET", f"/v1/jobs/{job_id}/results", params=params)
            for item in page["items"]:
                yield item
            cursor = page["next_cursor"]
            if cursor is None:
                return
            await asyncio.sleep(pause.after(page, page_size))

    async def cancel(self, job_id: str | uuid.UUID) -> Job:
        return Job.model_validate(await self._request("POST", f"/v1/jobs/{job_id}/cancel"))

    async def retry(
        self, job_id: str | uuid.UUID, *, deadline: datetime | str | None = None
    ) -> Job:
        """Run a partial or failed job's failed texts again; as `Client.retry`."""
        return Job.model_validate(
            await self._request("POST", f"/v1/jobs/{job_id}/retry", json=_retry_body(deadline))
        )

    async def jobs(self, *, status: str | None = None, limit: int = 50) -> list[Job]:
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
        page = await self._request("GET", "/v1/jobs", params=params)
        return [Job.model_validate(item) for item in page["items"]]
