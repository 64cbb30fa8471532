"""The Python clients against a running server: real API, real worker, tiny models."""

import asyncio
import csv
import uuid

import pytest

from tests.e2e.conftest import create_api_key
from textq.client import AsyncClient, Client, TextqError

pytestmark = pytest.mark.e2e


@pytest.fixture
def textq(service):
    key = create_api_key(service.env, tenant="client-tests")
    with Client(service.base_url, api_key=key) as client:
        yield client


def test_submit_wait_and_read_results(textq):
    run = uuid.uuid4().hex[:8]
    job = textq.submit("sentiment", texts=[f"I love it {run}", f"it broke {run}"])
    assert job.status.value in ("queued", "running", "succeeded")
    done = textq.wait(job.id, timeout_s=60)
    assert done.status.value == "succeeded" and done.progress.done == 2
    rows = list(textq.results(job.id, page_size=1))
    assert [row["index"] for row in rows] == [0, 1]
    assert all(row["label"] in ("POSITIVE", "NEGATIVE") for row in rows)
    assert done.id in {j.id for j in textq.jobs(status="succeeded", limit=200)}


def test_summarize_a_document_and_upload_a_file(textq, tmp_path):
    document = " ".join(f"Sentence number {n} says something new." for n in range(120))
    summary = textq.wait(textq.submit("summarize", document=document).id, timeout_s=120)
    (result,) = list(textq.results(summary.id))
    assert result["summary_text"]

    path = tmp_path / "feedback.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket", "comment"])
        writer.writerows([("T-1", "great support"), ("T-2", "late delivery, again")])
    batch = textq.upload_batch(path, text_column="comment", id_column="ticket")
    textq.wait(batch.id, timeout_s=60)
    assert [row["custom_id"] for row in textq.results(batch.id)] == ["T-1", "T-2"]


def test_errors_come_back_as_problems_and_cancel_stops_a_job(textq):
    with pytest.raises(TextqError) as unknown:
        textq.get(uuid.uuid4())
    assert unknown.value.status == 404 and unknown.value.detail
    run = uuid.uuid4().hex
    job = textq.submit("sentiment", texts=[f"text {n} of {run}" for n in range(5000)])
    cancelled = textq.cancel(job.id)
    assert cancelled.status.value == "cancelled"
    with pytest.raises(TextqError) as again:
        textq.cancel(job.id)
    assert again.value.status == 409


def test_the_async_client_does_the_same(service):
    key = create_api_key(service.env, tenant="client-tests")

    async def flow() -> list[dict]:
        async with AsyncClient(service.base_url, api_key=key) as textq:
            job = await textq.submit("sentiment", f"async and fine {uuid.uuid4().hex}")
            await textq.wait(job.id, timeout_s=60)
            return [row async for row in textq.results(job.id)]

    (row,) = asyncio.run(flow())
    assert row["label"] in ("POSITIVE", "NEGATIVE")
