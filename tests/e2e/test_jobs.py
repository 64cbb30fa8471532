"""Jobs from submit to results over HTTP, through a real worker process, on each backend."""

import time
import uuid

import httpx
import pytest

from shared.db import Database
from shared.jobs.submit import create_job
from shared.states import Task
from tests import reference
from tests.e2e.conftest import E2E_TENANT
from tests.e2e.polling import all_results, wait_for_job
from tests.e2e.processes import free_port, start, wait_until_ready

pytestmark = pytest.mark.e2e

FEEDBACK = [
    "I love it",
    "meh",
    "The battery died after two days and support never answered.",
    "Arrived on time, works exactly as described. Five stars.",
]
ARTICLE = (
    "The city council approved a new budget on Tuesday that increases funding for public "
    "transport and parks. The mayor said the plan would cut commute times and make streets "
    "safer, while critics argued that taxes would rise for small businesses."
)


def test_a_sentiment_job_from_submit_to_results(http, model_dirs):
    submitted = http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": FEEDBACK}})
    assert submitted.status_code == 202
    job = wait_for_job(http, submitted.json()["id"])
    assert job["status"] == "succeeded"
    assert job["progress"] | {"cached": 0} == {
        "total": 4,
        "done": 4,
        "errored": 0,
        "cached": 0,
        "chunks": {"total": 0, "done": 0},
    }
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert job["model"] == str(model_dirs.sentiment)
    assert job["model_revision"].startswith("sha256:")
    results = all_results(http, job["id"])
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    for result, expected in zip(
        results, reference.sentiment(model_dirs.sentiment, FEEDBACK), strict=True
    ):
        assert set(result) == {"index", "label", "score", "scores"}
        assert result["scores"] == pytest.approx(expected, abs=1e-4)
        assert result["label"] == max(expected, key=expected.get)


def test_repeated_texts_are_answered_from_the_cache_with_the_same_results(http):
    texts = ["cache me if you can", "great product", "great product", "slow delivery"]
    first = wait_for_job(
        http,
        http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}}).json()["id"],
    )
    assert first["progress"]["cached"] == 1  # the repeat within the job ran once
    second = wait_for_job(
        http,
        http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}}).json()["id"],
    )
    assert second["progress"] == {
        "total": 4,
        "done": 4,
        "errored": 0,
        "cached": 4,
        "chunks": {"total": 0, "done": 0},
    }
    assert all_results(http, second["id"]) == all_results(http, first["id"])


def test_a_summarization_job_uses_the_options_given(http, model_dirs):
    options = {"max_length": 12, "min_length": 3, "num_beams": 3}
    submitted = http.post(
        "/v1/jobs", json={"task": "summarize", "input": {"text": ARTICLE}, "options": options}
    )
    job = wait_for_job(http, submitted.json()["id"])
    assert job["status"] == "succeeded"
    [result] = all_results(http, job["id"])
    expected = reference.summaries(model_dirs.summarization, [ARTICLE], **options, do_sample=False)
    assert result == {"index": 0, "summary_text": expected[0]}


def test_results_of_a_large_job_come_in_pages_in_input_order(http):
    texts = [f"review number {n}: {'good' if n % 3 else 'bad'} product" for n in range(250)]
    job_id = http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}}).json()[
        "id"
    ]
    assert wait_for_job(http, job_id)["status"] == "succeeded"
    first = http.get(f"/v1/jobs/{job_id}/results", params={"limit": 100}).json()
    assert len(first["items"]) == 100
    assert first["next_cursor"]
    assert [r["index"] for r in all_results(http, job_id, limit=100)] == list(range(250))


def test_many_jobs_submitted_at_once_all_finish(http):
    ids = [
        http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": f"job {n}"}}).json()[
            "id"
        ]
        for n in range(20)
    ]
    for job_id in ids:
        assert wait_for_job(http, job_id)["status"] == "succeeded"
    listed = http.get("/v1/jobs", params={"status": "succeeded", "limit": 500}).json()["items"]
    assert set(ids) <= {job["id"] for job in listed}


def test_classic_endpoints_answer_the_pipeline_shapes(http, model_dirs):
    for path in ("/analyze", "/v1/analyze"):
        response = http.post(path, json={"text": "I love it"})
        assert response.status_code == 200
        [answer] = response.json()
        assert set(answer) == {"label", "score"}
        expected = reference.sentiment(model_dirs.sentiment, ["I love it"])[0]
        assert answer["label"] == max(expected, key=expected.get)
        assert answer["score"] == pytest.approx(max(expected.values()), abs=1e-4)
    for path in ("/summarize", "/v1/summarize"):
        response = http.post(path, json={"text": ARTICLE})
        assert response.status_code == 200
        assert response.json() == [
            {"summary_text": reference.summaries(model_dirs.summarization, [ARTICLE])[0]}
        ]


def test_classic_endpoints_bad_input_is_a_problem(http):
    for body in ({}, {"text": ""}, {"text": 3}, {"text": "a", "extra": 1}):
        response = http.post("/analyze", json=body)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"


def test_lengths_past_the_summarizers_decoder_are_a_422_naming_the_limit(http):
    # The worker recorded the tiny BART's 1,024 positions when it loaded it (warm-up).
    story = "The parcel arrived late and the box was damaged."
    for path, body in (
        (
            "/v1/jobs",
            {
                "task": "summarize",
                "input": {"text": story},
                "options": {"min_length": 1100, "max_length": 1200},
            },
        ),
        ("/summarize", {"text": story, "max_length": 2000}),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 422, response.text
        assert "at most 1,024" in response.json()["detail"]


def test_a_classic_call_past_its_timeout_returns_the_job_link(service, tmp_path):
    port = free_port()
    impatient = start(
        "impatient-api",
        ["api", "--port", str(port)],
        service.env | {"TEXTQ_SYNC_TIMEOUT_S": "0"},
        tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, [impatient])
        # A text no earlier test sent: a cached summary could beat even a 0 s timeout.
        text = f"{ARTICLE} ({uuid.uuid4()})"
        response = httpx.post(
            f"{base}/summarize", json={"text": text}, timeout=30, headers=service.headers
        )
        assert response.status_code == 202
        job = response.json()
        assert response.headers["location"] == job["links"]["self"]
        with httpx.Client(base_url=base, timeout=30, headers=service.headers) as client:
            assert wait_for_job(client, job["id"])["status"] == "succeeded"
    finally:
        impatient.stop()


def test_a_job_whose_doorbell_was_lost_still_runs(http, service):
    """The API committed the job and died before publishing: the sweeper rings instead."""
    url = service.env.get("TEXTQ_DATABASE_URL") or (
        f"sqlite:///{service.env['TEXTQ_DATA_DIR']}/textq.db"
    )
    db = Database(url, application_name="textq-tests")
    with db.write() as session:
        job = create_job(
            session,
            tenant_id=E2E_TENANT,
            task=Task.SENTIMENT,
            model=service.env["TEXTQ_SENTIMENT_MODEL"],
            options={},
            texts=["nobody rang for me"],
        )
    db.dispose()
    started = time.monotonic()
    assert wait_for_job(http, str(job.id), timeout_s=30)["status"] == "succeeded"
    assert time.monotonic() - started < 30
