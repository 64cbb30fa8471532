"""Files in and out by URL, and expiry per job, through real processes on both backends."""

import gzip
import json
import time
from collections import deque
from datetime import datetime, timedelta

import pytest

from tests.e2e.polling import all_results, wait_for_job
from tests.file_server import Served

pytestmark = pytest.mark.e2e

ROWS = [("r1", "I love this product"), ("r2", "Terrible it broke"), ("r3", "fine")]
SIGNED = "?X-Amz-Signature=abc%2Fdef&X-Amz-Expires=900"


def csv_gz() -> bytes:
    lines = ["id,text", *(f"{row_id},{text}" for row_id, text in ROWS)]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def wait_for(predicate, what, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (found := predicate()) is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout_s} s")


def test_a_batch_from_a_url_runs_and_its_results_are_put_to_the_output_url(
    http, service, files, hooks
):
    files.files["/in/feedback.csv.gz"] = Served(csv_gz())
    files.planned_puts = deque([503])  # the first PUT fails; the retry is delivered
    submitted = http.post(
        "/v1/batches",
        json={
            "task": "sentiment",
            "input_url": files.url("/in/feedback.csv.gz" + SIGNED),
            "id_column": "id",
            "output_url": files.url("/out/results.jsonl.gz" + SIGNED),
            "output_gzip": True,
            "webhook_url": hooks.url,
        },
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    job = wait_for_job(http, job_id)
    assert job["status"] == "succeeded"
    results = all_results(http, job_id)
    assert [r["custom_id"] for r in results] == [row_id for row_id, _ in ROWS]

    def delivered():
        shown = http.get(f"/v1/jobs/{job_id}").json()["output"]
        return shown if shown["status"] != "pending" else None

    output = wait_for(delivered, "the output delivery")
    assert (output["status"], output["attempts"]) == ("delivered", 2)
    put = files.puts[-1]
    assert put.path == "/out/results.jsonl.gz" + SIGNED
    lines = [json.loads(line) for line in gzip.decompress(put.body).decode().splitlines()]
    exported = http.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"})
    assert lines == [json.loads(line) for line in exported.text.splitlines()]
    assert [r["label"] for r in lines] == [r["label"] for r in results]

    def announced():
        types = [json.loads(r.body)["type"] for r in hooks.received]
        return types if "output.delivered" in types else None

    assert "job.completed" in wait_for(announced, "the output.delivered event")
    # The presigned URLs' signatures never reach a log; their hosts may.
    assert "abc%2Fdef" not in service.logs_text()
    assert "abc%2Fdef" not in json.dumps(http.get(f"/v1/jobs/{job_id}/webhooks").json())


def test_a_job_with_expires_after_s_is_purged_by_the_sweeper_after_it_ends(http):
    body = {"task": "sentiment", "input": {"texts": ["short-lived"]}, "expires_after_s": 1}
    job_id = http.post("/v1/jobs", json=body).json()["id"]
    job = wait_for_job(http, job_id)
    finished_at = datetime.fromisoformat(job["finished_at"])
    assert datetime.fromisoformat(job["expires_at"]) == finished_at + timedelta(seconds=1)

    def expired():
        shown = http.get(f"/v1/jobs/{job_id}").json()
        return shown if shown["status"] == "expired" else None

    shown = wait_for(expired, "the job's expiry", timeout_s=30)
    assert shown["expires_at"] == job["expires_at"]
    gone = http.get(f"/v1/jobs/{job_id}/results")
    assert gone.status_code == 410
    assert "after 1 s, as its expires_after_s asked" in gone.json()["detail"]
