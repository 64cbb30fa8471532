import base64
import itertools
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from api.app import create_app
from shared.models import JobItem, Worker, utcnow
from shared.states import Task


def submit(client, task="sentiment", texts=("a",)):
    return client.post("/v1/jobs", json={"task": task, "input": {"texts": list(texts)}}).json()


def test_an_unknown_job_is_404(client):
    for job_id in (uuid.uuid4(), "not-a-uuid"):
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/results"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "/problems/job-not-found"


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/jobs"), ("PUT", "/v1/jobs/{id}"), ("GET", "/analyze"), ("PATCH", "/healthz")],
)
def test_a_wrong_method_is_405_with_allow(client, method, path):
    job = submit(client)
    response = client.request(method, path.format(id=job["id"]))
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"]


def test_an_export_of_an_unfinished_job_is_409_and_a_page_is_partial(client):
    job = submit(client)
    response = client.get(f"/v1/jobs/{job['id']}/results", params={"format": "csv"})
    assert response.status_code == 409
    assert "queued" in response.json()["detail"]
    page = client.get(f"/v1/jobs/{job['id']}/results").json()
    assert (page["status"], page["partial"], page["items"]) == ("queued", True, [])


def test_jobs_are_listed_newest_first_in_pages(client):
    ids = [submit(client)["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_jobs_can_be_filtered_by_task_and_status(client):
    sentiment = submit(client)["id"]
    summary = submit(client, task="summarize")["id"]
    assert [j["id"] for j in client.get("/v1/jobs?task=sentiment").json()["items"]] == [sentiment]
    assert [j["id"] for j in client.get("/v1/jobs?task=summarization").json()["items"]] == [summary]
    assert len(client.get("/v1/jobs?status=queued").json()["items"]) == 2
    assert client.get("/v1/jobs?status=succeeded").json()["items"] == []


def forged(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "status=done",
        "task=translate",
        "limit=0",
        "limit=5000",
        "cursor=garbage",
        "cursor=" + forged('{"k":"jobs","t":"2026-01-01T00:00:00+00:00","id":5}'),
        "cursor=" + forged("[" * 5000 + "]" * 5000),
        f"cursor={'A' * 5000}",
    ],
)
def test_bad_list_queries_are_4xx_problems(client, query):
    response = client.get(f"/v1/jobs?{query}")
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("index", ["10" * 15, "true", '"3"'])
def test_a_forged_results_cursor_is_400(client, db, index):
    job = submit(client)
    with db.write() as session:  # finish it so its results are readable
        session.execute(text("UPDATE jobs SET status = 'succeeded'"))
    cursor = forged('{"k":"results","i":' + index + "}")
    response = client.get(f"/v1/jobs/{job['id']}/results", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/invalid-cursor"


def test_docs_and_openapi_describe_the_bodies(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/JobCreate"
    assert "JobInput" in spec["components"]["schemas"]


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_cancelling_a_queued_job_then_again(client):
    job = submit(client, texts=("a", "b"))
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/job-already-finished"
    assert "already finished as cancelled" in again.json()["detail"]
    results = client.get(f"/v1/jobs/{job['id']}/results").json()["items"]
    assert results == [
        {"index": 0, "error": "cancelled before it ran"},
        {"index": 1, "error": "cancelled before it ran"},
    ]
    assert client.post(f"/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404


def test_an_unfinished_job_shows_its_place_in_the_queue(client, db):
    older = client.post(
        "/v1/jobs", json={"task": "sentiment", "input": {"texts": ["a", "b", "c"]}}
    ).json()
    urgent = client.post(
        "/v1/jobs", json={"task": "sentiment", "input": {"texts": ["d"]}, "priority": 9}
    ).json()
    newer = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": ["e"]}}).json()
    places = {
        name: client.get(f"/v1/jobs/{job['id']}").json()["queue"]
        for name, job in (("older", older), ("urgent", urgent), ("newer", newer))
    }
    assert [places[n]["items_ahead"] for n in ("urgent", "older", "newer")] == [0, 1, 4]
    assert places["older"]["items_left"] == 3
    assert places["newer"]["estimated_finish_at"] is None, "nothing has run: no pace yet"
    model = client.app.state.settings.sentiment_model
    assert (places["older"]["task"], places["older"]["model"]) == ("sentiment", model)
    assert places["older"]["workers"] == 0, "no worker has started"

    serve(db, model)
    for _ in range(2):  # a pace needs two batches: the time between them
        finish_one(db, model)
    place = client.get(f"/v1/jobs/{newer['id']}").json()["queue"]
    assert place["items_ahead"] == 2 and place["items_per_s"] > 0
    assert place["estimated_finish_at"] is not None
    assert client.get("/v1/jobs").json()["items"][0]["queue"] is None, "listing stays cheap"
    finished = client.get(f"/v1/jobs/{urgent['id']}").json()
    assert finished["status"] == "succeeded" and finished["queue"] is None


def serve(db, model, *, name="serving", seen_ago_s=0.0):
    """Register a worker serving sentiment with `model`, last seen `seen_ago_s` ago."""
    from shared import worker_registry

    with db.write() as session:
        serves = {"sentiment": {"model": model}}
        worker_registry.register_worker(
            session, name=name, device="cpu", dtype="float32", models=serves
        )
        session.execute(
            update(Worker)
            .where(Worker.name == name)
            .values(last_seen_at=utcnow() - timedelta(seconds=seen_ago_s))
        )


def finish_one(db, model):
    """Claim and finish one pending sentiment item of `model`, as a worker's batch does."""
    from shared.jobs.outcomes import record_outcomes
    from shared.jobs.work import Outcome
    from tests.factories import claim

    held = claim(db, model=model, max_items=1)
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[Outcome(held.items[0].id, result={"label": "X"})],
        )


def test_no_pace_and_no_eta_until_they_can_be_known(client, db):
    model = client.app.state.settings.sentiment_model
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": list("abcd")}})
    url = f"/v1/jobs/{job.json()['id']}"
    serve(db, model)
    finish_one(db, model)
    queue = client.get(url).json()["queue"]
    # One batch has finished: a rate over the last minute would be 1/60 per second and
    # promise three minutes for what takes seconds. No pace is known yet, so no ETA.
    assert (queue["items_left"], queue["items_per_s"], queue["estimated_finish_at"]) == (3, 0, None)

    finish_one(db, model)
    queue = client.get(url).json()["queue"]
    assert queue["items_per_s"] > 1, "two batches a moment apart: a fast pace"
    assert queue["estimated_finish_at"] is not None

    serve(db, model, seen_ago_s=3600)  # the only worker died
    queue = client.get(url).json()["queue"]
    assert queue["workers"] == 0 and queue["items_per_s"] > 0
    assert queue["estimated_finish_at"] is None, "nothing can run it: no ETA"


def test_the_pace_leaves_out_what_finished_before_the_serving_workers_started(client, db):
    model = client.app.state.settings.sentiment_model
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": list("abcde")}})
    assert job.status_code == 202, job.text
    url = f"/v1/jobs/{job.json()['id']}"
    serve(db, model)
    for _ in range(2):
        finish_one(db, model)
    with db.write() as session:  # those two batches ran 40 s ago, then the worker died
        session.execute(
            update(JobItem)
            .where(JobItem.finished_at.is_not(None))
            .values(finished_at=utcnow() - timedelta(seconds=40))
        )
        session.execute(
            update(Worker)
            .where(Worker.name == "serving")
            .values(started_at=utcnow() - timedelta(seconds=50))
        )
    # Restarted: a new process, listed anew, while the dead one still looks live a while.
    serve(db, model, name="restarted")
    for _ in range(2):
        finish_one(db, model)
    queue = client.get(url).json()["queue"]
    # Over the minute, 3 items in 40 s; the restarted worker's two batches came a moment
    # apart, and that is its pace.
    assert queue["items_per_s"] > 1, queue


def test_the_queue_counts_the_live_workers_serving_the_jobs_model(client, db):
    from shared import worker_registry

    model = client.app.state.settings.sentiment_model
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": ["a"]}}).json()
    with db.write() as session:
        for name, serves in [
            ("serving", {"sentiment": {"model": model}}),
            ("another-model", {"sentiment": {"model": "other/model"}}),
            ("another-task", {"summarize": {"model": model}}),
            ("dead", {"sentiment": {"model": model}}),
        ]:
            worker_registry.register_worker(
                session, name=name, device="cpu", dtype="float32", models=serves
            )
        session.execute(
            update(Worker)
            .where(Worker.name == "dead")
            .values(last_seen_at=utcnow() - timedelta(hours=1))
        )
    assert client.get(f"/v1/jobs/{job['id']}").json()["queue"]["workers"] == 1


def test_the_cli_says_when_no_worker_serves_a_job(client, capsys):
    from shared.schemas import JobRead
    from textq.client_commands import _print_job

    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": ["a"]}}).json()
    _print_job(JobRead.model_validate(client.get(f"/v1/jobs/{job['id']}").json()), False)
    settings = client.app.state.settings
    name = settings.catalogue.default(Task.SENTIMENT).name
    said = capsys.readouterr().out.splitlines()
    assert said[-1] == (
        f"waiting: no worker serves the sentiment model {name} ({settings.sentiment_model}) yet"
    )


def test_a_deleted_job_is_gone_and_an_expired_one_says_so(client, db):
    from sqlalchemy import update

    from shared.models import Job

    gone = submit(client)
    assert client.delete(f"/v1/jobs/{gone['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{gone['id']}").status_code == 404
    assert client.delete(f"/v1/jobs/{gone['id']}").status_code == 404

    old = submit(client)
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(old["id"]))
            .values(status="expired", finished_at=Job.created_at)
        )
    read = client.get(f"/v1/jobs/{old['id']}").json()
    assert (read["status"], read["queue"]) == ("expired", None)
    results = client.get(f"/v1/jobs/{old['id']}/results")
    assert results.status_code == 410
    assert results.json()["type"] == "/problems/job-expired"
    assert client.post(f"/v1/jobs/{old['id']}/cancel").status_code == 409


def test_the_list_and_a_job_show_the_start_of_its_first_text(client):
    first = "The parcel arrived late and the box was crushed. " * 2  # 98 characters
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": [first, "b"]}})
    assert job.status_code == 202, job.text
    listed = client.get("/v1/jobs").json()["items"][0]
    assert listed["id"] == job.json()["id"]
    assert listed["input"] == {"kind": "texts", "preview": first[:80]}
    assert client.get(f"/v1/jobs/{listed['id']}").json()["input"]["preview"] == first[:80]


def test_a_jobs_preview_is_kept_with_the_job_not_read_from_its_items(client, db):
    body = {"task": "sentiment", "input": {"texts": ["Kept with the job", "b"]}}
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    with db.write() as session:  # were the preview read from the items, this would show
        changed = session.execute(
            text("UPDATE job_items SET input_text = 'changed' WHERE job_id = :job"),
            {"job": job_id if db.engine.dialect.name == "postgresql" else uuid.UUID(job_id).hex},
        )
        assert changed.rowcount == 2
    assert client.get(f"/v1/jobs/{job_id}").json()["input"]["preview"] == "Kept with the job"
    assert client.get("/v1/jobs").json()["items"][0]["input"]["preview"] == "Kept with the job"


def test_every_answer_about_a_job_shows_its_input_as_reading_it_does(client, api_settings):
    first = "The parcel arrived late and the box was crushed. " * 2  # 98 characters
    body = {"task": "sentiment", "input": {"texts": [first, "b"]}}
    submitted = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    read = client.get(f"/v1/jobs/{job_id}").json()
    assert read["input"] == {"kind": "texts", "preview": first[:80]}
    retried = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert retried.status_code == 200, retried.text
    uploaded = client.post(
        "/v1/batches",
        files={"file": ("feedback.csv", b"text\nI love it\nmeh\n")},
        data={"task": "sentiment"},
    )
    assert uploaded.status_code == 202, uploaded.text
    assert uploaded.json()["input"]["preview"] == "I love it"
    with TestClient(
        create_app(api_settings.model_copy(update={"sync_timeout_s": 0})),
        base_url="http://127.0.0.1",
    ) as impatient:  # no worker runs here: the classic call answers 202 with the job
        classic = impatient.post("/analyze", json={"text": first})
    assert classic.status_code == 202, classic.text
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    for answer in (submitted, retried, uploaded, classic, cancelled):
        job = answer.json()
        assert job["input"] == client.get(f"/v1/jobs/{job['id']}").json()["input"], answer.url


def finish(db, model, task, outcome):
    """Run every pending item of `task` and `model`, round after round, with `outcome(item)`."""
    from shared.jobs.outcomes import record_outcomes
    from tests.factories import claim

    while (held := claim(db, task=task, model=model)) is not None:
        with db.write() as session:
            record_outcomes(
                session,
                claim_token=held.token,
                outcomes=[outcome(item) for item in held.items],
            )


def test_results_carry_each_text_when_asked(client, db):
    from shared.jobs.work import Outcome

    texts = ["I love it", "It broke"]
    job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}}).json()
    model = client.app.state.settings.sentiment_model
    scores = {"label": "POSITIVE", "score": 0.9, "scores": {"POSITIVE": 0.9, "NEGATIVE": 0.1}}
    finish(db, model, Task.SENTIMENT, lambda item: Outcome(item.id, result=scores))
    url = f"/v1/jobs/{job['id']}/results"
    assert [r["text"] for r in client.get(url, params={"include_text": True}).json()["items"]] == (
        texts
    )
    assert all("text" not in r for r in client.get(url).json()["items"]), "only when asked"


def test_a_cancelled_texts_finished_chunks_stay_readable(client, db):
    from shared.jobs.outcomes import record_outcomes
    from shared.jobs.work import NewChunk, Outcome
    from tests.factories import claim

    model = client.app.state.settings.summarization_model
    job = client.post(
        "/v1/jobs", json={"task": "summarize", "input": {"document": "A mill. " * 40}}
    ).json()
    text_claim = claim(db, task=Task.SUMMARIZE, model=model)
    (text,) = text_claim.items
    halves = [NewChunk(0, 160, 10, text.text[:160]), NewChunk(160, 320, 10, text.text[160:])]
    with db.write() as session:
        record_outcomes(
            session, claim_token=text_claim.token, outcomes=[Outcome(text.id, chunks=halves)]
        )
    first_chunk = claim(db, task=Task.SUMMARIZE, model=model, max_items=1)
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=first_chunk.token,
            outcomes=[Outcome(first_chunk.items[0].id, result={"summary_text": "The mill."})],
        )
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    url = f"/v1/jobs/{job['id']}/results"
    [shown] = client.get(url, params={"include_chunks": True}).json()["items"]
    assert shown["error"] == "cancelled while its chunks ran: 1 of 2 had finished"
    assert [chunk.get("summary_text") for chunk in shown["chunks"]] == ["The mill.", None]
    assert "chunks" not in client.get(url).json()["items"][0], "only when asked"


def test_a_summarys_chunks_and_reduce_parts_add_up_to_the_jobs_chunk_progress(client, db):
    from shared.jobs.work import NewChunk, Outcome

    document = "A sentence about the mill. " * 100
    job = client.post(
        "/v1/jobs", json={"task": "summarize", "input": {"document": document}}
    ).json()

    def outcome(item):
        # The document splits in 3 chunks; their joined summaries split again in 2 parts.
        count = {(False, 0): 3, (False, 1): 2}.get((item.is_chunk, item.level))
        if count is None:
            return Outcome(item.id, result={"summary_text": f"summary {item.id}."})
        size = len(item.text) // count
        bounds = [n * size for n in range(count)] + [len(item.text)]
        return Outcome(
            item.id,
            chunks=[NewChunk(a, b, 10, item.text[a:b]) for a, b in itertools.pairwise(bounds)],
        )

    finish(db, client.app.state.settings.summarization_model, Task.SUMMARIZE, outcome)
    finished = client.get(f"/v1/jobs/{job['id']}").json()
    assert finished["status"] == "succeeded"
    assert finished["progress"]["chunks"] == {"total": 5, "done": 5}
    result = client.get(f"/v1/jobs/{job['id']}/results", params={"include_chunks": True}).json()[
        "items"
    ][0]
    assert (len(result["chunks"]), result["reduce_parts"]) == (3, 2)
