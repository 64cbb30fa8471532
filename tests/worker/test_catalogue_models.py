"""Several models per task: chosen per job, each job on its own model and revision, served
by workers that load them on first work and claim only the models they serve."""

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from shared.config import Settings
from shared.jobs.reads import get_job, list_item_outcomes
from shared.models import Job, JobItem
from shared.states import JobStatus, Task
from worker.runtime import WorkerRuntime
from worker.tasks import drain_queue

TEXTS = ["I love it", "the parcel came late and broken", "meh"]
SIX_TEXTS = [f"text {n}" for n in range(6)]


@pytest.fixture(scope="session")
def second_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier's shape with other weights: a second version of the model."""
    from tests.model_factory import build_sentiment_model

    return build_sentiment_model(tmp_path_factory.mktemp("v2") / "sentiment", seed=1)


@pytest.fixture
def with_catalogue(settings: Settings, tmp_path: Path, model_dirs, second_version) -> Settings:
    path = tmp_path / "models.toml"
    path.write_text(
        f'[sentiment.sst2]\nsource = "{model_dirs.sentiment}"\ndefault = true\n'
        'shadow = "v2"\nshadow_fraction = 0.5\n\n'
        f'[sentiment.v2]\nsource = "{second_version}"\n\n'
        f'[summarize.bart]\nsource = "{model_dirs.summarization}"\ndefault = true\n'
    )
    return settings.model_copy(update={"models_file": path})


def submit(client: TestClient, model: str | None = None, texts=TEXTS) -> dict:
    body = {"task": "sentiment", "input": {"texts": texts}} | ({"model": model} if model else {})
    answer = client.post("/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()


def outcome(db, job: dict):
    """Return the stored job and its results in order."""
    job_id = uuid.UUID(job["id"])
    with db.read() as session:
        stored = get_job(session, tenant_id="default", job_id=job_id)
        rows = list_item_outcomes(session, job_id=job_id, after_index=-1, limit=100)
        return stored, [row.result for row in rows]


def run_worker(settings: Settings, task: Task = Task.SENTIMENT, **update) -> WorkerRuntime:
    runtime = WorkerRuntime.start(settings.model_copy(update=update))
    runtime.list_in_registry()
    drain_queue(runtime, task)
    return runtime


def test_each_job_runs_on_the_model_it_chose_at_that_models_revision(with_catalogue, settings, db):
    # Before the catalogue: the default model, run without the cache.
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        before = submit(client)
    run_worker(settings, result_cache=False).stop()
    _, before_results = outcome(db, before)

    with TestClient(create_app(with_catalogue), base_url="http://127.0.0.1") as client:
        default, chosen = submit(client), submit(client, "v2")
        assert (default["model_name"], chosen["model_name"]) == ("sst2", "v2")
        runtime = WorkerRuntime.start(with_catalogue)
        assert runtime.served["v2"].runner is None, "a model other than the default loads lazily"
        drain_queue(runtime, Task.SENTIMENT)
        assert runtime.served["v2"].runner is not None
        runtime.stop()
        shown = client.get(f"/v1/jobs/{chosen['id']}").json()

    default_job, default_results = outcome(db, default)
    chosen_job, chosen_results = outcome(db, chosen)
    assert default_job.status == chosen_job.status == JobStatus.SUCCEEDED
    assert default_results == before_results, "the catalogue changes nothing for the default"
    # Same texts, other weights: its own revision and its own scores, none from the cache.
    assert default_job.model_revision != chosen_job.model_revision
    assert chosen_job.cached_items == 0
    assert [r["scores"] for r in chosen_results] != [r["scores"] for r in default_results]
    assert shown["model_name"] == "v2"
    assert shown["model"] == str(with_catalogue.catalogue.by_name["v2"].source)
    assert shown["model_revision"] == chosen_job.model_revision


def test_an_unknown_model_is_a_422_listing_the_tasks_models(with_catalogue, db):
    with TestClient(create_app(with_catalogue), base_url="http://127.0.0.1") as client:
        answers = [
            client.post(
                "/v1/jobs", json={"task": "sentiment", "input": {"text": "x"}, "model": "bart"}
            ),
            client.post(
                "/v1/batches",
                files={"file": ("f.csv", b"text\nhello\n")},
                data={"task": "sentiment", "model": "nope"},
            ),
            client.post("/analyze", json={"text": "x", "model": "nope"}),
        ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert "the sentiment models are: 'sst2', 'v2'" in problem["detail"]
        assert problem["errors"][0]["field"] == "model"
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_models_lists_the_catalogue_and_the_workers_serving_each(with_catalogue, db):
    runtime = WorkerRuntime.start(with_catalogue.model_copy(update={"worker_models": "sst2,v2"}))
    runtime.list_in_registry()
    runtime.stop()
    with TestClient(create_app(with_catalogue), base_url="http://127.0.0.1") as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert list(models) == ["sst2", "v2", "bart"]
    sst2, v2, bart = models["sst2"], models["v2"], models["bart"]
    assert (sst2["default"], sst2["shadow"], sst2["shadow_fraction"]) == (True, "v2", 0.5)
    assert sst2["labels"] == ["NEGATIVE", "POSITIVE"] and sst2["window_tokens"] == 512
    assert sst2["loaded_revisions"][0].startswith("sha256:")
    (worker,) = sst2["workers"]
    assert (worker["device"], worker["dtype"], worker["loaded"]) == ("cpu", "float32", True)
    # Served but not loaded until work comes for it; bart is served by no worker.
    assert [w["loaded"] for w in v2["workers"]] == [False]
    assert v2["loaded_revisions"] == [] and v2["labels"] is None
    assert bart["workers"] == []


def test_a_worker_never_claims_work_for_a_model_it_does_not_serve(with_catalogue, db):
    with TestClient(create_app(with_catalogue), base_url="http://127.0.0.1") as client:
        default, chosen = submit(client), submit(client, "v2")
    run_worker(with_catalogue, worker_models="sst2").stop()
    assert outcome(db, default)[0].status == JobStatus.SUCCEEDED
    assert outcome(db, chosen)[0].status == JobStatus.QUEUED
    run_worker(with_catalogue, worker_models="v2").stop()
    assert outcome(db, chosen)[0].status == JobStatus.SUCCEEDED


def two_sentiment_models(settings, tmp_path, first: Path, second: Path, **update) -> Settings:
    """Settings serving two sentiment models, "sst2" (the default) and "v2", in that order
    of the file, recording after every batch."""
    names = {first: "sst2", second: "v2"}
    path = tmp_path / "models.toml"
    path.write_text(
        "".join(
            f'[sentiment.{names[source]}]\nsource = "{source}"\n'
            + ("default = true\n" if names[source] == "sst2" else "")
            + "\n"
            for source in (first, second)
        )
    )
    return settings.model_copy(update={"models_file": path, "record_interval_s": 0.0} | update)


def job_for(db, settings: Settings, name: str, texts: list[str], priority: int = 5):
    """Make a sentiment job for the catalogue model `name` of `settings`."""
    from tests.factories import make_job

    source = str(settings.catalogue.by_name[name].source)
    return make_job(db, texts=texts, model=source, model_name=name, priority=priority)


def claims_of(db, job) -> int:
    with db.read() as session:
        return session.scalar(
            select(func.count(func.distinct(JobItem.claim_token))).where(JobItem.job_id == job.id)
        )


def finished_at(db, job):
    with db.read() as session:
        return session.get(Job, job.id).finished_at


def in_batches_of_two(runner, during_first_batch=None) -> None:
    """Run the runner's texts two at a time, calling `during_first_batch` in the first."""
    runner.limits = runner.limits.__class__(max_tokens=4096, max_size=2)
    forward = runner._forward
    called = []

    def forward_and_call(batch, encoded, tensors):
        if during_first_batch is not None and not called:
            called.append(during_first_batch())
        return forward(batch, encoded, tensors)

    runner._forward = forward_and_call


def test_urgent_work_of_another_model_runs_before_the_rest_of_a_bulk_claim(
    settings, db, model_dirs, second_version, tmp_path
):
    two = two_sentiment_models(settings, tmp_path, model_dirs.sentiment, second_version)
    bulk = job_for(db, two, "sst2", SIX_TEXTS)
    urgent = []
    runtime = WorkerRuntime.start(two)
    try:
        in_batches_of_two(
            runtime.served["sst2"].runner,
            lambda: urgent.append(job_for(db, two, "v2", ["now"], priority=9)),
        )
        # One claim holds all six texts; it ends after its second batch, v2 loads and runs
        # the urgent text, then the bulk job's last two texts run.
        assert drain_queue(runtime, Task.SENTIMENT) == 7
    finally:
        runtime.stop()
    assert (claims_of(db, bulk), finished_at(db, urgent[0]) < finished_at(db, bulk)) == (2, True)


def test_urgent_work_of_a_model_gone_idle_earlier_in_the_turn_runs_next(
    settings, db, model_dirs, second_version, tmp_path, monkeypatch
):
    two = two_sentiment_models(settings, tmp_path, model_dirs.sentiment, second_version)
    # sst2 comes first in the turn and has nothing: it is idle when v2's bulk claim runs.
    bulk = job_for(db, two, "v2", SIX_TEXTS)
    urgent = []
    runtime = WorkerRuntime.start(two)
    load = runtime.load

    def load_in_batches_of_two(model):
        runner = load(model)
        in_batches_of_two(
            runner,
            lambda: urgent.append(job_for(db, two, "sst2", ["now"], priority=9)),
        )
        return runner

    monkeypatch.setattr(runtime, "load", load_in_batches_of_two)
    try:
        assert drain_queue(runtime, Task.SENTIMENT) == 7
    finally:
        runtime.stop()
    assert (claims_of(db, bulk), finished_at(db, urgent[0]) < finished_at(db, bulk)) == (2, True)


def test_work_for_a_model_that_cannot_load_does_not_end_claims(
    settings, db, model_dirs, second_version, tmp_path
):
    two = two_sentiment_models(settings, tmp_path, model_dirs.sentiment, second_version)
    bulk = job_for(db, two, "sst2", SIX_TEXTS)
    job_for(db, two, "v2", ["now"], priority=9)
    runtime = WorkerRuntime.start(two)
    try:
        runtime.served["v2"].broken = "cannot load (as if its files were missing)"
        in_batches_of_two(runtime.served["sst2"].runner)
        assert drain_queue(runtime, Task.SENTIMENT) == 6
    finally:
        runtime.stop()
    assert claims_of(db, bulk) == 1, "the work no model here can run did not interrupt it"
