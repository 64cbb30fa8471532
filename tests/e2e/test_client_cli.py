"""The `textq` client commands against a running server, as a user types them."""

import csv
import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.e2e.conftest import create_api_key

pytestmark = pytest.mark.e2e


@pytest.fixture
def textq(service):
    """Run `textq ARGS...` with TEXTQ_URL and TEXTQ_API_KEY set, as a user's shell has them."""
    env = {
        **os.environ,
        "TEXTQ_URL": service.base_url,
        "TEXTQ_API_KEY": create_api_key(service.env, tenant="cli-tests"),
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "textq", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    return run


def test_submit_and_wait_prints_the_finished_job(textq):
    done = textq("submit", "sentiment", f"I love it {uuid.uuid4().hex}", "--wait", "--json")
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["progress"]["done"] == 1
    assert "1/1" in done.stderr  # the progress bar ran to the end
    assert json.loads(textq("status", job["id"], "--json").stdout)["id"] == job["id"]
    listed = json.loads(textq("jobs", "--status", "succeeded", "--json").stdout)
    assert job["id"] in {j["id"] for j in listed}


def test_a_document_from_a_file_is_summarized(textq, tmp_path):
    report = tmp_path / "report.txt"
    report.write_text(" ".join(f"Finding {n} is worth a line." for n in range(80)))
    job = json.loads(textq("submit", "summarize", str(report), "--wait", "--json").stdout)
    assert job["status"] == "succeeded" and job["input"]["kind"] == "document"
    (row,) = [json.loads(line) for line in textq("results", job["id"]).stdout.splitlines()]
    assert row["summary_text"]


def test_bulk_shows_progress_and_a_summary_then_results_go_to_a_file(textq, tmp_path):
    feedback = tmp_path / "feedback.csv"
    run = uuid.uuid4().hex[:8]
    with feedback.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket", "comment"])
        writer.writerows((f"T-{n}", f"comment {n} of {run}") for n in range(300))
    done = textq("bulk", str(feedback), "--column", "comment", "--id-column", "ticket", "--wait")
    assert "300/300" in done.stderr and "label" in done.stderr  # bar, then the summary table
    job_id = done.stdout.split()[0]
    out = tmp_path / "results.csv"
    textq("results", job_id, "--format", "csv", "-o", str(out))
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 300 and rows[0]["custom_id"] == "T-0"


def test_errors_are_one_line_and_a_non_zero_exit(textq):
    unknown = textq("status", str(uuid.uuid4()), ok=False)
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and unknown.stderr.startswith("textq: 404")
    finished = json.loads(textq("submit", "sentiment", "done soon", "--wait", "--json").stdout)
    again = textq("cancel", finished["id"], ok=False)
    assert again.returncode == 1 and again.stderr.startswith("textq: 409")
    nowhere = textq("jobs", "--url", "http://127.0.0.1:9", ok=False)
    assert nowhere.returncode == 1 and "cannot reach" in nowhere.stderr
