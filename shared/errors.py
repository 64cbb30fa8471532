"""Errors textq reports to clients; each docstring is the error's default message."""

from __future__ import annotations

from typing import Any


class TextqError(Exception):
    """Something went wrong."""

    status_code = 500
    problem_type = "internal-error"
    title = "Internal error"

    # Response headers every instance carries (e.g. WWW-Authenticate on a 401).
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only per class

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.extra = extra
        super().__init__(self.detail)


class MalformedJson(TextqError):
    """The request body is not valid JSON."""

    status_code = 400
    problem_type = "malformed-json"
    title = "Malformed JSON"


class BodyNotUtf8(TextqError):
    """The request body is not valid UTF-8."""

    status_code = 400
    problem_type = "body-not-utf8"
    title = "Body is not UTF-8"


class UnsupportedMediaType(TextqError):
    """The request body must be JSON (Content-Type: application/json)."""

    status_code = 415
    problem_type = "unsupported-media-type"
    title = "Unsupported media type"


class RequestTooLarge(TextqError):
    """The request body is larger than this server accepts."""

    status_code = 413
    problem_type = "request-too-large"
    title = "Request too large"


class InvalidRequest(TextqError):
    """The request is well-formed JSON but its content is not valid."""

    status_code = 422
    problem_type = "invalid-request"
    title = "Invalid request"


class IdempotencyKeyReused(TextqError):
    """This Idempotency-Key was already used with a different request."""

    status_code = 422
    problem_type = "idempotency-key-reused"
    title = "Idempotency key reused"


class Unauthorized(TextqError):
    """Send an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

    status_code = 401
    problem_type = "unauthorized"
    title = "Unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="textq"'}  # noqa: RUF012


class TooManyRequests(TextqError):
    """This API key is over its rate limit; retry after the time in Retry-After."""

    status_code = 429
    problem_type = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, *, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.headers = headers


class TooManyActiveJobs(TextqError):
    """This tenant already has as many unfinished jobs as it may; retry when some finish."""

    status_code = 429
    problem_type = "too-many-active-jobs"
    title = "Too many active jobs"

    def __init__(self, *, limit: int, active: int, retry_after_s: int) -> None:
        super().__init__(
            f"This tenant has {active} jobs queued or running; the limit is {limit} "
            f"(TEXTQ_MAX_ACTIVE_JOBS_PER_TENANT). Retry when some have finished.",
            limit=limit,
            active=active,
        )
        self.headers = {"Retry-After": str(retry_after_s)}


class JobNotFound(TextqError):
    """No job with this id exists."""

    status_code = 404
    problem_type = "job-not-found"
    title = "Job not found"


class ModelNotFound(TextqError):
    """No model of that name: name a task (`sentiment`, `summarize`) or its configured model."""

    status_code = 404
    problem_type = "model-not-found"
    title = "Model not found"


class JobNotFinished(TextqError):
    """The job has not finished yet: export its results with `follow=true` to get its rows as
    they finish, or read JSON pages of those finished so far."""

    status_code = 409
    problem_type = "job-not-finished"
    title = "Job not finished"


class JobAlreadyFinished(TextqError):
    """The job has already finished; there is nothing left to cancel."""

    status_code = 409
    problem_type = "job-already-finished"
    title = "Job already finished"


class NothingToRetry(TextqError):
    """The job has no failed items to run again: only a partial or failed job can be retried."""

    status_code = 409
    problem_type = "nothing-to-retry"
    title = "Nothing to retry"


class JobExpired(TextqError):
    """The job finished longer ago than the retention period; its data was purged."""

    status_code = 410
    problem_type = "job-expired"
    title = "Job expired"


class InvalidCursor(TextqError):
    """The cursor is not one this server issued."""

    status_code = 400
    problem_type = "invalid-cursor"
    title = "Invalid cursor"


class InferenceFailed(TextqError):
    """The model could not process this input."""

    status_code = 500
    problem_type = "inference-failed"
    title = "Inference failed"


class ServiceUnavailable(TextqError):
    """A backing service (database or broker) is not reachable; retry shortly."""

    status_code = 503
    problem_type = "service-unavailable"
    title = "Service unavailable"
