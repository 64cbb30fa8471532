"""Job control over HTTP through a real worker: cancelling, idempotent submits."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.polling import all_results

pytestmark = pytest.mark.e2e


def test_a_running_job_is_cancelled_and_keeps_what_was_computed(http):
    texts = [
        f"Report number {n}. Sales rose in the north and fell in the south." for n in range(400)
    ]
    job = http.post("/v1/jobs", json={"task": "summarize", "input": {"texts": texts}}).json()
    deadline = time.monotonic() + 60
    while http.get(f"/v1/jobs/{job['id']}").json()["progress"]["done"] == 0:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)

    cancelled = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    # The batch that was running finishes; then nothing moves any more.
    time.sleep(3)
    settled = http.get(f"/v1/jobs/{job['id']}").json()
    time.sleep(2)
    assert http.get(f"/v1/jobs/{job['id']}").json() == settled
    assert settled["status"] == "cancelled"
    done = settled["progress"]["done"]
    assert 0 < done < 400
    results = all_results(http, job["id"])
    summaries = [r for r in results if "summary_text" in r]
    skipped = [r for r in results if r.get("error") == "cancelled before it ran"]
    assert len(summaries) == done
    assert len(summaries) + len(skipped) == 400
    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_twenty_identical_retries_at_once_make_one_job(service):
    body = {"task": "sentiment", "input": {"texts": ["retried at once"]}}
    barrier = threading.Barrier(20)

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            barrier.wait()
            return client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "burst-1"})

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(submit, range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
