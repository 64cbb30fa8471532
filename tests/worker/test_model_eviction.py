"""A worker under a memory budget (TEXTQ_WORKER_MEMORY_GB) keeps what fits: it loads on first
work, evicts the least recently used model, reloads it when work comes back for it, and
refuses a model larger than the whole budget while its jobs wait."""

import logging
import weakref
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from api.app import create_app
from shared.config import Settings
from shared.states import JobStatus, Task
from tests.worker.test_catalogue_models import outcome, submit
from worker.runtime import WorkerRuntime
from worker.tasks import drain_queue

SMALL = ("sst2", "v2", "v3")


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two more classifiers of the tiny one's shape, and one four times as wide."""
    from tests.model_factory import build_sentiment_model

    root = tmp_path_factory.mktemp("budget")
    return {
        "v2": build_sentiment_model(root / "v2", seed=1),
        "v3": build_sentiment_model(root / "v3", seed=2),
        "big": build_sentiment_model(root / "big", seed=3, dim=128),
    }


def footprint_bytes(path: Path) -> int:
    """Return a model's parameters and buffers in bytes as transformers itself counts them."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype="float32")
    return int(model.get_memory_footprint(return_buffers=True))


@pytest.fixture
def catalogue(settings: Settings, tmp_path: Path, model_dirs, versions) -> Settings:
    path = tmp_path / "models.toml"
    path.write_text(
        f'[sentiment.sst2]\nsource = "{model_dirs.sentiment}"\ndefault = true\n\n'
        + "".join(f'[sentiment.{name}]\nsource = "{dir_}"\n\n' for name, dir_ in versions.items())
        + f'[summarize.bart]\nsource = "{model_dirs.summarization}"\ndefault = true\n'
    )
    # No result cache: a job run again must really run on the reloaded model.
    return settings.model_copy(
        update={"models_file": path, "worker_tasks": "sentiment", "result_cache": False}
    )


@pytest.fixture(scope="session")
def two_fit_gb(model_dirs, versions) -> float:
    """A budget that holds two of the three small models and not three (they weigh alike)."""
    sizes = [
        footprint_bytes(model_dirs.sentiment),
        *(footprint_bytes(versions[n]) for n in SMALL[1:]),
    ]
    assert max(sizes) - min(sizes) < 0.01 * max(sizes)
    return 2.5 * max(sizes) / 1e9


def count(metric: str, model: str) -> float:
    return REGISTRY.get_sample_value(metric, {"model": model}) or 0.0


def counts(metric: str) -> dict[str, float]:
    return {name: count(metric, name) for name in (*SMALL, "big")}


def loaded(runtime: WorkerRuntime) -> set[str]:
    return {name for name, served in runtime.served.items() if served.runner is not None}


def run(runtime: WorkerRuntime, client: TestClient, model: str) -> tuple[dict, list]:
    job = submit(client, model)
    drain_queue(runtime, Task.SENTIMENT)
    return job, outcome(runtime.db, job)[1]


def test_a_budget_for_two_of_three_models_evicts_the_least_recently_used(catalogue, two_fit_gb, db):
    settings = catalogue.model_copy(
        update={"worker_models": ",".join(SMALL), "worker_memory_gb": two_fit_gb}
    )
    loads, evictions = counts("textq_model_loads_total"), counts("textq_model_evictions_total")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        runtime = WorkerRuntime.start(settings)
        runtime.list_in_registry()
        assert loaded(runtime) == {"sst2"}, "the default loads at start, the others on work"
        first_v2, first_v2_scores = run(runtime, client, "v2")
        assert loaded(runtime) == {"sst2", "v2"}
        run(runtime, client, "sst2")  # sst2 is now used more recently than v2
        v2_runner = runtime.served["v2"].runner
        assert v2_runner is not None
        v2_weight = weakref.ref(next(v2_runner.loaded.model.parameters()))
        del v2_runner
        run(runtime, client, "v3")
        assert loaded(runtime) == {"sst2", "v3"}, "v2 was the least recently used"
        assert v2_weight() is None, "an evicted model's weights are freed"
        size = runtime.served["v3"].size_bytes or 0
        assert REGISTRY.get_sample_value("textq_models_loaded_bytes") == 2 * size
        # v2 comes back for its next job, in place of sst2 (used before v3), with the same
        # scores as before its eviction.
        again, again_scores = run(runtime, client, "v2")
        assert loaded(runtime) == {"v3", "v2"}
        assert [r["scores"] for r in again_scores] == [r["scores"] for r in first_v2_scores]
        assert runtime.runners.get(Task.SENTIMENT) is None, "an evicted default is no runner"
        # The default comes back too when its work does.
        default_job, _ = run(runtime, client, "sst2")
        assert loaded(runtime) == {"v2", "sst2"}
        workers = {m["name"]: m["workers"] for m in client.get("/v1/models").json()["models"]}
        runtime.stop()

    for job in (first_v2, again, default_job):
        assert outcome(db, job)[0].status == JobStatus.SUCCEEDED
    assert {name: [w["loaded"] for w in workers[name]] for name in SMALL} == {
        "sst2": [True],
        "v2": [True],
        "v3": [False],
    }
    assert {n: count("textq_model_loads_total", n) - loads[n] for n in SMALL} == {
        "sst2": 2,
        "v2": 2,
        "v3": 1,
    }
    assert {n: count("textq_model_evictions_total", n) - evictions[n] for n in SMALL} == {
        "sst2": 1,
        "v2": 1,
        "v3": 1,
    }
    assert REGISTRY.get_sample_value("textq_models_loaded_bytes") == 2 * size


def test_a_model_larger_than_the_whole_budget_is_refused_and_its_jobs_wait(
    catalogue, two_fit_gb, versions, db, caplog
):
    assert footprint_bytes(versions["big"]) > two_fit_gb * 1e9
    settings = catalogue.model_copy(
        update={"worker_models": "sst2,big", "worker_memory_gb": two_fit_gb}
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        runtime = WorkerRuntime.start(settings)
        runtime.list_in_registry()
        loads = counts("textq_model_loads_total")
        evictions = counts("textq_model_evictions_total")
        with caplog.at_level(logging.ERROR, logger="worker"):
            job, _ = run(runtime, client, "big")
        big = next(m for m in client.get("/v1/models").json()["models"] if m["name"] == "big")
        assert loaded(runtime) == {"sst2"}, "nothing was evicted for a model that cannot fit"
        runtime.stop()

    assert outcome(db, job)[0].status == JobStatus.QUEUED
    (refusal,) = [r.getMessage() for r in caplog.records if "memory budget" in r.getMessage()]
    assert "'big' needs" in refusal and "TEXTQ_WORKER_MEMORY_GB" in refusal
    ((worker,),) = [big["workers"]]
    assert worker["loaded"] is False and "TEXTQ_WORKER_MEMORY_GB" in worker["error"]
    assert counts("textq_model_loads_total") == loads
    assert counts("textq_model_evictions_total") == evictions


def test_without_a_budget_every_model_stays_loaded(catalogue, db):
    settings = catalogue.model_copy(update={"worker_models": ",".join(SMALL)})
    assert settings.worker_memory_gb is None
    evictions = counts("textq_model_evictions_total")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        runtime = WorkerRuntime.start(settings)
        jobs = [run(runtime, client, name)[0] for name in ("v2", "v3", "sst2", "v2")]
        assert loaded(runtime) == set(SMALL)
        runtime.stop()
    assert all(outcome(db, job)[0].status == JobStatus.SUCCEEDED for job in jobs)
    assert counts("textq_model_evictions_total") == evictions
