"""`textq api --workers N`: every scrape of /metrics counts what all N processes did."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import backend_env
from tests.e2e.processes import free_port, start, wait_until_ready
from tests.e2e.test_metrics import scrape, value

pytestmark = pytest.mark.e2e


def test_each_scrape_of_a_multi_process_api_counts_every_process(tmp_path, request):
    env = backend_env("sqlite", tmp_path, request)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    api = start("api", ["api", "--port", str(port), "--workers", "2"], env, tmp_path / "logs")
    try:
        wait_until_ready(base_url, [api])
        for i in range(8):
            # A connection of its own each, so the two processes share the jobs out.
            body = {"task": "sentiment", "input": {"text": f"count me {i}"}}
            httpx.post(f"{base_url}/v1/jobs", json=body, timeout=30).raise_for_status()
        counted = [
            value(
                scrape(f"{base_url}/metrics"),
                "textq_jobs_submitted_total",
                task="sentiment",
                input_kind="texts",
            )
            for _ in range(6)
        ]
    finally:
        assert api.stop() == 0, api.output()
    assert counted == [8] * 6, api.output()
