"""Results while a job runs, followed exports and the events stream, below a real worker.

Outcomes are recorded as a worker records them (shared.jobs.outcomes), on both backends;
tests/e2e/test_live_results.py runs the same through real processes.
"""

import json
import re
import threading
import time

import pytest

from shared.jobs.outcomes import record_outcomes
from shared.jobs.work import Outcome
from tests.factories import claim

SCORES = {"label": "POSITIVE", "score": 0.9, "scores": {"POSITIVE": 0.9, "NEGATIVE": 0.1}}


def submit(client, texts):
    response = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}})
    assert response.status_code == 202, response.text
    return response.json()


def claim_all(db, client):
    return claim(db, model=client.app.state.settings.sentiment_model)


def record(db, held, indexes, *, job_id):
    outcomes = [Outcome(item.id, result=SCORES) for item in held.items if item.index in indexes]
    with db.write() as session:
        record_outcomes(session, claim_token=held.token, outcomes=outcomes)


def parse_events(body: str) -> list[dict]:
    """Return the stream's events as dicts of their fields (comments as `comment`)."""
    events = []
    for block in body.split("\n\n"):
        fields: dict = {}
        for line in block.splitlines():
            if line.startswith(":"):
                fields["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value
        if fields:
            events.append(fields)
    return events


def test_a_running_jobs_results_are_those_finished_up_to_the_first_one_not(client, db):
    job = submit(client, [f"text {n}" for n in range(5)])
    held = claim_all(db, client)
    url = f"/v1/jobs/{job['id']}/results"
    empty = client.get(url).json()
    assert (empty["status"], empty["partial"], empty["items"]) == ("running", True, [])
    assert empty["next_cursor"], "a running job always gives a cursor to read on from"

    record(db, held, {0, 1, 3}, job_id=job["id"])
    first = client.get(url, params={"cursor": empty["next_cursor"]}).json()
    assert [item["index"] for item in first["items"]] == [0, 1], "stops before text 2"
    assert first["partial"] is True and first["status"] == "running"

    again = client.get(url, params={"cursor": first["next_cursor"]}).json()
    assert again["items"] == [] and again["next_cursor"] == first["next_cursor"]

    record(db, held, {2, 4}, job_id=job["id"])
    rest = client.get(url, params={"cursor": first["next_cursor"], "limit": 2}).json()
    assert [item["index"] for item in rest["items"]] == [2, 3]
    assert (rest["status"], rest["partial"]) == ("succeeded", False)
    last = client.get(url, params={"cursor": rest["next_cursor"]}).json()
    assert [item["index"] for item in last["items"]] == [4]
    assert last["next_cursor"] is None


def test_an_export_of_a_running_job_needs_follow(client):
    job = submit(client, ["a"])
    response = client.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"})
    assert response.status_code == 409
    assert "follow=true" in response.json()["detail"]


@pytest.mark.parametrize("format", ["jsonl", "csv"])
def test_a_followed_export_sends_every_row_once_and_ends_with_the_job(client, db, format):
    job = submit(client, [f"text {n}" for n in range(5)])
    held = claim_all(db, client)
    record(db, held, {0, 1}, job_id=job["id"])

    def finish_later():
        time.sleep(0.5)
        record(db, held, {3}, job_id=job["id"])
        time.sleep(0.5)
        record(db, held, {2, 4}, job_id=job["id"])

    worker = threading.Thread(target=finish_later)
    worker.start()
    started = time.monotonic()
    response = client.get(
        f"/v1/jobs/{job['id']}/results", params={"format": format, "follow": "true"}
    )
    worker.join()
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.9, "it waited for the job to end"
    if format == "jsonl":
        indexes = [json.loads(line)["index"] for line in response.text.splitlines()]
    else:
        indexes = [int(line.split(",")[0]) for line in response.text.splitlines()[1:]]
    assert indexes == [0, 1, 2, 3, 4]


def test_the_event_stream_shows_progress_results_and_the_end(client, db):
    job = submit(client, [f"text {n}" for n in range(4)])
    held = claim_all(db, client)

    def finish_later():
        time.sleep(0.7)
        record(db, held, {0, 2}, job_id=job["id"])
        time.sleep(0.7)
        record(db, held, {1, 3}, job_id=job["id"])

    worker = threading.Thread(target=finish_later)
    worker.start()
    response = client.get(f"/v1/jobs/{job['id']}/events", params={"results": "true"})
    worker.join()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    named = [e for e in events if "event" in e]
    assert named[0]["event"] == "progress" and named[0]["data"]["status"] == "running"
    assert named[-1]["event"] == "finished" and named[-1]["data"]["status"] == "succeeded"
    assert named[-1]["data"]["progress"]["done"] == 4
    sent = [item["index"] for e in named if e["event"] == "result" for item in e["data"]["items"]]
    assert sent == [0, 1, 2, 3]
    assert len({e["id"] for e in named}) == len(named), "every event has an id of its own"
    assert all(re.fullmatch(r"(-?\d+\.){5}[a-z]+", e["id"]) for e in named), "resumable ids"
    dones = [e["data"]["progress"]["done"] for e in named if e["event"] == "progress"]
    assert dones == sorted(set(dones)) and len(dones) >= 2, "progress only when it moved"


def test_resuming_with_last_event_id_sends_only_what_is_new(client, db):
    job = submit(client, [f"text {n}" for n in range(3)])
    held = claim_all(db, client)
    record(db, held, {0}, job_id=job["id"])
    url = f"/v1/jobs/{job['id']}/events"

    def finish_later():
        time.sleep(0.5)
        record(db, held, {1, 2}, job_id=job["id"])

    worker = threading.Thread(target=finish_later)
    worker.start()
    whole = parse_events(client.get(url, params={"results": "true"}).text)
    worker.join()
    named = [e for e in whole if "event" in e]
    first_result = next(e for e in named if e["event"] == "result")
    assert [i["index"] for i in first_result["data"]["items"]] == [0]
    position = first_result["id"]

    resumed = parse_events(
        client.get(url, params={"results": "true"}, headers={"Last-Event-ID": position}).text
    )
    replayed = [e for e in resumed if "event" in e]
    assert [e["event"] for e in replayed][-1] == "finished"
    assert [i["index"] for e in replayed if e["event"] == "result" for i in e["data"]["items"]] == [
        1,
        2,
    ], "text 0 is not sent again"
    assert position not in {e["id"] for e in replayed}

    by_query = client.get(url, params={"last_event_id": named[-1]["id"]})
    assert by_query.status_code == 204, "after `finished` there is nothing to reconnect to"


def test_an_event_stream_of_an_unknown_job_or_bad_id_is_a_problem(client):
    import uuid

    unknown = client.get(f"/v1/jobs/{uuid.uuid4()}/events")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    job = submit(client, ["a"])
    bad = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "1.2.x"})
    assert bad.status_code == 400
    assert "Last-Event-ID" in bad.json()["detail"]


def test_a_long_text_is_in_a_running_jobs_results_once_its_chunks_are_reduced(client, db):
    from shared.jobs.work import NewChunk
    from shared.states import Task

    texts = ["A sentence about the mill, and its wheel.", "A short note."]
    job = client.post("/v1/jobs", json={"task": "summarize", "input": {"texts": texts}}).json()
    model = client.app.state.settings.summarization_model
    url = f"/v1/jobs/{job['id']}/results"

    def run_round(outcome):
        held = claim(db, task=Task.SUMMARIZE, model=model)
        with db.write() as session:
            record_outcomes(
                session, claim_token=held.token, outcomes=[outcome(i) for i in held.items]
            )

    def split_or_summarize(item):
        if item.index == 0 and not item.is_chunk and item.level == 0:  # the long text: 2 chunks
            half = len(item.text) // 2
            return Outcome(
                item.id,
                chunks=[
                    NewChunk(0, half, 10, item.text[:half]),
                    NewChunk(half, len(item.text), 10, item.text[half:]),
                ],
            )
        return Outcome(item.id, result={"summary_text": f"summary {item.id}."})

    run_round(split_or_summarize)  # text 1 is done; text 0 waits for its chunks
    assert client.get(url).json()["items"] == []
    run_round(split_or_summarize)  # the chunks are done; text 0 waits for their reduction
    assert client.get(url).json()["items"] == []
    assert client.get(f"/v1/jobs/{job['id']}").json()["progress"]["chunks"]["done"] == 2
    run_round(split_or_summarize)  # the reduction: text 0 is done, and so is the job
    page = client.get(url).json()
    assert [item["index"] for item in page["items"]] == [0, 1]
    assert (page["status"], page["next_cursor"]) == ("succeeded", None)
