"""The two jobs users come for, over HTTP through a real worker: a book, and a feedback file."""

import csv
import io
import itertools
import json
import time
from pathlib import Path

import pytest

from tests.e2e.polling import TERMINAL, all_results, wait_for_job

pytestmark = pytest.mark.e2e

DATA = Path(__file__).parents[1] / "data"


def books() -> str:
    """Return four public-domain books as one document of about 105,000 words."""
    return "\n\n".join(p.read_text() for p in sorted((DATA / "long_documents").glob("*.txt")))


def test_a_100000_word_document_is_chunked_batched_and_reduced(http):
    document = books()
    assert len(document.split()) >= 100_000
    response = http.post(
        "/v1/jobs?task=summarize&options=" + json.dumps({"max_length": 20, "min_length": 5}),
        content=document.encode(),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    seen_done = set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        seen_done.add(job["progress"]["chunks"]["done"])
        if job["status"] in TERMINAL:
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded", job
    chunks_total = job["progress"]["chunks"]["total"]
    assert chunks_total >= 200
    assert len(seen_done) >= 3, f"progress should move while chunks run: {sorted(seen_done)}"

    [plain] = all_results(http, job_id)
    assert "chunks" not in plain
    [result] = http.get(f"/v1/jobs/{job_id}/results", params={"include_chunks": "true"}).json()[
        "items"
    ]
    chunks = result["chunks"]
    assert chunks[0]["start"] == 0 and chunks[-1]["end"] == len(document)
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(chunks))
    assert all(c["summary_text"] and c.get("error") is None for c in chunks)
    assert 0 < len(result["summary_text"].split()) <= 20


def test_a_feedback_file_runs_and_its_results_stream_back_in_order(http):
    reviews = [
        json.loads(line)["text"]
        for line in (DATA / "uci_yelp_labelled.jsonl").read_text().splitlines()[:300]
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["ticket", "comment"])
    for number, review in enumerate(reviews):
        writer.writerow([f"T-{number:04d}", review])
    writer.writerow(["T-0000", "a repeated ticket id"])
    writer.writerow(["T-9999", "   "])
    response = http.post(
        "/v1/batches",
        files={"file": ("feedback.csv", buffer.getvalue().encode())},
        data={"task": "sentiment", "text_column": "comment", "id_column": "ticket"},
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(http, response.json()["id"], timeout_s=300)

    assert job["status"] == "partial"
    assert job["progress"]["total"] == 302
    assert job["progress"]["errored"] == 2
    assert sum(job["labels"].values()) == 300

    lines = http.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"})
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in lines.text.splitlines()]
    assert [r["index"] for r in records] == list(range(302))
    assert [r["custom_id"] for r in records[:300]] == [f"T-{n:04d}" for n in range(300)]
    assert all(r["label"] in job["labels"] and r["error"] is None for r in records[:300])
    assert records[300]["error"].startswith(
        "index 300: custom_id T-0000 is already used by index 0"
    )
    assert "whitespace" in records[301]["error"]

    table = http.get(f"/v1/jobs/{job['id']}/results", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [r["custom_id"] for r in rows] == [r["custom_id"] for r in records]
    assert [r["label"] for r in rows[:300]] == [r["label"] for r in records[:300]]
