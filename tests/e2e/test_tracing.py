"""With TEXTQ_TRACING on, one trace follows a job from the API request to the worker's batch."""

import time

import httpx
import pytest

from tests.e2e.conftest import backend_env
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import free_port, start, wait_until_ready
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.e2e


def batch_ancestry(receiver: OtlpReceiver) -> list[tuple[str, str]] | None:
    """Return the (service, name) of each ancestor of the batch span, nearest first."""
    spans = list(receiver.spans)
    batches = [s for s in spans if s.name == "textq.batch"]
    if not batches:
        return None
    (batch,) = batches
    assert batch.service == "textq-worker" and batch.attributes["size"] == 1
    by_id = {s.span_id: s for s in spans if s.trace_id == batch.trace_id}
    chain = []
    current = batch
    while current.parent_id in by_id:
        current = by_id[current.parent_id]
        chain.append((current.service, current.name))
    return chain


def test_a_trace_runs_from_the_request_through_the_doorbell_to_the_batch(
    tmp_path, model_dirs, request
):
    receiver = OtlpReceiver().start()
    env = backend_env("postgres", tmp_path, request) | {
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_WORKER_TASKS": "sentiment",
        "TEXTQ_WORKER_METRICS_PORT": "0",
        "TEXTQ_TRACING": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fifth of a second
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start("api", ["api", "--port", str(port)], env, tmp_path / "logs")
    worker = start("worker", ["worker", "--device", "cpu"], env, tmp_path / "logs")
    try:
        wait_until_ready(base, [api, worker])
        time.sleep(3)  # the worker consumes before the job comes, so its doorbell wakes it
        with httpx.Client(base_url=base, timeout=30) as http:
            job = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "traced"}})
            assert wait_for_job(http, job.json()["id"])["status"] == "succeeded"
        # Spans come as they end: the batch first, the drain and the request later.
        deadline = time.monotonic() + 30
        while not (chain := batch_ancestry(receiver)) or chain[-1][1] != "POST /v1/jobs":
            assert time.monotonic() < deadline, (chain, receiver.spans)
            time.sleep(0.2)
        assert chain[0] == ("textq-worker", "textq.claim")
        assert ("textq-worker", "run/textq.drain") in chain
        assert ("textq-api", "apply_async/textq.drain") in chain
        assert chain[-1] == ("textq-api", "POST /v1/jobs"), chain
    finally:
        for process in (worker, api):
            process.stop()
        receiver.stop()
