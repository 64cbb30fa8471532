"""`--wait` follows a job's events, resumes them by id, and polls where there are none.

A stand-in transport answers in the process: nothing is sent anywhere.
"""

import json

import httpx
import pytest

from tests.textq.test_client_retries import JOB
from textq import job_display
from textq.client import Client, Job

ID = JOB["id"]


def job_body(status: str, done: int) -> dict:
    return JOB | {"status": status, "progress": JOB["progress"] | {"total": 2, "done": done}}


def event(name: str, status: str, done: int, event_id: str) -> str:
    data = {"job_id": ID, "status": status, "progress": job_body(status, done)["progress"]}
    return f"event: {name}\nid: {event_id}\ndata: {json.dumps(data)}\n\n"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(job_display, "POLL_S", 0)


def follow(handler) -> list[Job]:
    with Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler), retries=0) as c:
        return list(job_display.follow(c, Job.model_validate(job_body("running", 0))))


def test_events_move_the_bar_and_a_dropped_stream_resumes_from_its_last_id():
    streams: list[str | None] = []
    gets = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            streams.append(request.headers.get("last-event-id"))
            if len(streams) == 1:  # dropped after one event
                return httpx.Response(
                    200, text=event("progress", "running", 1, "1.0.0.0.-1.running")
                )
            body = event("progress", "succeeded", 2, "2.0.0.0.-1.succeeded")
            return httpx.Response(
                200, text=body + event("finished", "succeeded", 2, "2.0.0.0.-1.end")
            )
        gets.append(request.url.path)
        return httpx.Response(200, json=job_body("running" if len(gets) == 1 else "succeeded", 2))

    seen = follow(handler)
    assert streams == [None, "1.0.0.0.-1.running"]
    assert [(j.status.value, j.progress.done) for j in seen] == [
        ("running", 1),
        ("running", 2),  # the job as read after the dropped stream
        ("succeeded", 2),  # read whole at the end: its ending event is not yielded alone
    ]


def test_without_an_event_stream_it_polls():
    polled = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"title": "Not Found", "status": 404})
        polled.append(request.url.path)
        return httpx.Response(200, json=job_body("succeeded" if len(polled) == 3 else "running", 1))

    seen = follow(handler)
    assert len(polled) == 3
    assert seen[-1].status.value == "succeeded"
