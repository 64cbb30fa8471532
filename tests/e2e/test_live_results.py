"""Results while a job runs, its events and its followed export, through a real worker.

Each test reads a bulk job while the worker runs it: reading starts once progress shows
some rows done and others not, so what is read is a part, not the whole.
"""

import json
import time
import uuid

import httpx
import pytest

from tests.e2e.polling import TERMINAL, wait_until_partly_done

pytestmark = pytest.mark.e2e


def submit_rows(http: httpx.Client, rows: int) -> str:
    """Upload a CSV of `rows` short reviews as a sentiment job; return its id.

    The texts are new to the service, so none comes from the result cache and the job runs
    long enough to be read while it runs."""
    run = uuid.uuid4().hex[:8]
    lines = ["ticket,comment"] + [
        f"T-{n:05d},review {n} of {run}: good value and kind support" for n in range(rows)
    ]
    response = http.post(
        "/v1/batches",
        files={"file": ("reviews.csv", ("\n".join(lines) + "\n").encode())},
        data={"task": "sentiment", "text_column": "comment", "id_column": "ticket"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_a_30000_row_jobs_results_are_read_in_order_while_it_runs(http):
    total = 30_000
    job_id = submit_rows(http, total)
    wait_until_partly_done(http, job_id)

    indexes: list[int] = []
    partial_pages = 0
    cursor = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = http.get(f"/v1/jobs/{job_id}/results", params=params).raise_for_status().json()
        indexes += [item["index"] for item in page["items"]]
        assert page["partial"] is (page["status"] not in TERMINAL)
        partial_pages += page["partial"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        if page["partial"] and not page["items"]:
            time.sleep(0.1)
    assert partial_pages >= 1, "the first page was read while the job ran"
    assert indexes == list(range(total)), "every row once, in input order"


def read_events(response: httpx.Response, until: str | None = None) -> list[dict]:
    """Read a stream's events (JSON data) until one named `until`, or the stream's end."""
    events: list[dict] = []
    fields: dict = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields:
                events.append(fields)
                if fields["event"] == until:
                    return events
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
    return events


def test_an_event_stream_resumes_from_its_last_event_id_without_repeats(http):
    total = 3000
    job_id = submit_rows(http, total)
    wait_until_partly_done(http, job_id)
    url = f"/v1/jobs/{job_id}/events"
    with http.stream("GET", url, params={"results": "true"}, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        first = read_events(response, until="progress")
    assert first[-1]["event"] == "progress"
    assert first[-1]["data"]["progress"]["done"] + first[-1]["data"]["progress"]["errored"] > 0

    with http.stream(
        "GET",
        url,
        params={"results": "true"},
        headers={"Last-Event-ID": first[-1]["id"]},
        timeout=300,
    ) as response:
        rest = read_events(response)
    assert rest[-1]["event"] == "finished" and rest[-1]["data"]["status"] == "succeeded"
    assert rest[-1]["data"]["progress"]["done"] == total
    # The job may finish before the resume, leaving only `finished`: what is asserted is that
    # no figures the client already saw are sent again, and each event moves them forward.
    counted = [
        event["data"]["progress"]["done"] + event["data"]["progress"]["errored"]
        for event in first[-1:] + rest
        if event["event"] == "progress"
    ]
    assert counted == sorted(set(counted)), f"each progress event moves forward: {counted}"
    assert rest[-1]["data"]["progress"]["done"] >= counted[-1]
    ids = [event["id"] for event in first + rest]
    assert len(ids) == len(set(ids)), "no event is sent twice"
    sent = [
        item["index"]
        for event in first + rest
        if event["event"] == "result"
        for item in event["data"]["items"]
    ]
    assert sent == list(range(total)), "every result once, in input order"


def test_a_followed_export_streams_every_row_once_and_ends_with_the_job(http):
    total = 5000
    job_id = submit_rows(http, total)
    wait_until_partly_done(http, job_id)
    with http.stream(
        "GET",
        f"/v1/jobs/{job_id}/results",
        params={"format": "jsonl", "follow": "true"},
        timeout=300,
    ) as response:
        assert response.status_code == 200
        records = [json.loads(line) for line in response.iter_lines() if line]
    job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert [record["index"] for record in records] == list(range(total))
    assert [record["custom_id"] for record in records[:2]] == ["T-00000", "T-00001"]
    assert all(record["label"] and record["error"] is None for record in records)


def test_the_python_client_and_the_cli_read_a_running_job_to_its_end(http, service, tmp_path):
    import os
    import subprocess
    import sys

    from textq.client import Client

    total = 4000
    key = service.headers["Authorization"].removeprefix("Bearer ")
    job_id = submit_rows(http, total)
    wait_until_partly_done(http, job_id)
    with Client(service.base_url, api_key=key) as client:
        rows = list(client.results(job_id, page_size=300))
    assert [row["index"] for row in rows] == list(range(total))

    job_id = submit_rows(http, total)
    wait_until_partly_done(http, job_id)
    env = {**os.environ, "TEXTQ_URL": service.base_url, "TEXTQ_API_KEY": key}
    unfollowed = subprocess.run(
        [sys.executable, "-m", "textq", "results", job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if http.get(f"/v1/jobs/{job_id}").json()["status"] == "running":  # as it was asked
        assert unfollowed.returncode == 1, unfollowed.stderr
        assert "add --follow" in unfollowed.stderr and "follow=true" not in unfollowed.stderr
    written = tmp_path / "rows.csv"
    command = ["results", job_id, "--format", "csv", "--follow", "--output", str(written)]
    done = subprocess.run(
        [sys.executable, "-m", "textq", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = written.read_text().splitlines()
    assert lines[0].startswith("index,custom_id,label")
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(total))
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
