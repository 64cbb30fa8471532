"""Workers that serve some catalogue models, as real processes: a job for a model no live
worker serves waits (and says so), and runs once a worker serving it starts."""

import time

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.e2e.conftest import backend_env, two_sentiment_models
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import Process, free_port, start, wait_until_ready

pytestmark = pytest.mark.e2e

SWEEP_INTERVAL_S = 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_waits_for_a_worker_serving_its_model(
    backend, tmp_path, model_dirs, second_sentiment_model, request
):
    models_file = two_sentiment_models(tmp_path / "models.toml", model_dirs, second_sentiment_model)
    env = backend_env(backend, tmp_path, request) | {
        "TEXTQ_MODELS_FILE": str(models_file),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_DTYPE": "float32",
        "TEXTQ_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
        "TEXTQ_LOG_LEVEL": "INFO",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    api = start("api", ["api", "--port", str(port)], env, logs)
    workers: list[Process] = []

    def start_worker(model: str) -> Process:
        metrics = {"TEXTQ_WORKER_METRICS_PORT": str(free_port())}
        worker = start(f"worker-{model}", ["worker", "--models", model], env | metrics, logs)
        workers.append(worker)
        return worker

    try:
        sst2 = start_worker("sst2")
        wait_until_ready(base, [api, sst2])
        with httpx.Client(base_url=base, timeout=30) as http:
            texts = {"texts": ["I love it", "the parcel came late and broken"]}
            default = http.post("/v1/jobs", json={"task": "sentiment", "input": texts}).json()
            chosen = http.post(
                "/v1/jobs", json={"task": "sentiment", "input": texts, "model": "v2"}
            ).json()
            assert wait_for_job(http, default["id"])["model_name"] == "sst2", sst2.output()

            # Sweeps ring the doorbells of waiting work; none of them may give it to sst2.
            time.sleep(6 * SWEEP_INTERVAL_S)
            waiting = http.get(f"/v1/jobs/{chosen['id']}").json()
            assert waiting["status"] == "queued", waiting
            queue = waiting["queue"]
            assert (queue["model_name"], queue["workers"]) == ("v2", 0), queue
            assert queue["model"] == str(second_sentiment_model)
            assert queue["estimated_finish_at"] is None, "nothing runs it: no ETA"
            assert "jobs wait for model 'v2'" in sst2.output(), "the worker's sweeps say so"
            (v2,) = [m for m in http.get("/v1/models").json()["models"] if m["name"] == "v2"]
            assert v2["workers"] == []

            start_worker("v2")
            finished = wait_for_job(http, chosen["id"], timeout_s=120)
        assert finished["status"] == "succeeded", workers[-1].output()
        assert finished["model_name"] == "v2" and finished["model_revision"]
        assert finished["progress"]["done"] == 2
    finally:
        for process in (*workers, api):
            process.stop()
