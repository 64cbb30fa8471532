"""The client retries what the server asks it to, as it asks.

A stand-in transport answers in the process: nothing is sent anywhere.
"""

import httpx
import pytest

from textq.client import Client, TextqError

JOB = {
    "id": "00000000-0000-0000-0000-000000000001",
    "task": "sentiment",
    "status": "queued",
    "progress": {
        "total": 1,
        "done": 0,
        "errored": 0,
        "cached": 0,
        "chunks": {"total": 0, "done": 0},
    },
    "model": "m",
    "model_revision": None,
    "options": {},
    "input": {"kind": "texts"},
    "priority": 6,
    "created_at": "2026-11-25T00:00:00Z",
    "started_at": None,
    "finished_at": None,
    "links": {"self": "/v1/jobs/1", "results": "/v1/jobs/1/results"},
}


def test_429_and_503_are_retried_with_the_same_idempotency_key():
    seen = []
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}, json={"title": "slow down"}),
        httpx.Response(503, headers={"Retry-After": "0"}, json={"title": "unavailable"}),
        httpx.Response(202, json=JOB),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        return answers.pop(0)

    with Client("http://127.0.0.1:9", api_key="k", transport=httpx.MockTransport(handler)) as c:
        job = c.submit("sentiment", "hi")
    assert str(job.id) == JOB["id"]
    assert len(seen) == 3 and len(set(seen)) == 1


def test_a_refusal_is_raised_with_its_problem_details():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"title": "Invalid request", "detail": "texts is empty"})

    transport = httpx.MockTransport(handler)
    with (
        Client("http://127.0.0.1:9", transport=transport) as c,
        pytest.raises(TextqError, match="texts is empty") as refused,
    ):
        c.submit("sentiment", texts=[])
    assert refused.value.status == 422


def test_exactly_one_input_is_required():
    with Client("http://127.0.0.1:9") as c, pytest.raises(ValueError):
        c.submit("sentiment", "a", texts=["b"])
