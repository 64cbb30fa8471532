"""Metrics scraped from the API, a worker and the webhooks process during a real run."""

import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.polling import wait_for_job
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[str, float]:
    """Return every sample of a /metrics page as `name{labels}` -> value."""
    page = httpx.get(url, timeout=10).raise_for_status().text
    samples = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return samples.get(f"{name}{{{wanted}}}", 0.0)


def test_the_api_a_worker_and_the_webhooks_process_expose_what_they_did(service, http):
    worker_url = f"http://127.0.0.1:{service.env['TEXTQ_WORKER_METRICS_PORT']}/metrics"
    webhooks_url = f"http://127.0.0.1:{service.env['TEXTQ_WEBHOOKS_METRICS_PORT']}/metrics"
    api_before, worker_before = scrape(f"{service.base_url}/metrics"), scrape(worker_url)
    receiver = Receiver().start()
    try:
        run = uuid.uuid4().hex  # texts no earlier test sent: none comes from the result cache
        texts = [f"great value {run}", f"broke on day two {run}", f"fine {run}", f"again {run}"]
        job = http.post(
            "/v1/jobs",
            json={"task": "sentiment", "input": {"texts": texts}, "webhook_url": receiver.url},
        ).json()
        assert wait_for_job(http, job["id"])["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        receiver.stop()
    api, worker = scrape(f"{service.base_url}/metrics"), scrape(worker_url)

    submitted = "textq_jobs_submitted_total"
    assert value(api, submitted, task="sentiment", input_kind="texts") == (
        value(api_before, submitted, task="sentiment", input_kind="texts") + 1
    )
    assert value(api, "textq_queue_depth", task="sentiment") == 0
    assert "textq_queue_oldest_age_seconds{task=summarize}" in api

    def grew(name: str, **labels: str) -> float:
        return value(worker, name, **labels) - value(worker_before, name, **labels)

    assert grew("textq_items_processed_total", task="sentiment", outcome="done") == 4
    assert grew("textq_tokens_processed_total", task="sentiment") >= 4 * 3
    assert grew("textq_batch_size_count", task="sentiment") >= 1
    assert grew("textq_batch_padding_ratio_count", task="sentiment") >= 1
    assert grew("textq_jobs_finished_total", task="sentiment", status="succeeded") == 1
    for phase in ("queue_wait", "run", "end_to_end"):
        assert grew("textq_job_seconds_count", task="sentiment", phase=phase) == 1
    # The warm-up loaded a model of each task; earlier tests on this service may load more.
    loads = [k for k in worker if k.startswith("textq_model_load_seconds{")]
    assert all(worker[k] > 0 for k in loads)
    assert {k.split("task=")[1].rstrip("}") for k in loads} >= {"sentiment", "summarize"}

    webhooks = scrape(webhooks_url)
    assert value(webhooks, "textq_webhook_attempts_total", outcome="2xx") >= 1
