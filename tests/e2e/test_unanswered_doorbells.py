"""Doorbells nobody takes: the worker finds the waiting work itself.

A worker whose broker consumer stopped taking messages (one that never recovered from a
lost connection, say) stays alive and listed while its work waits. The work is in the
database, and the worker's sweeper drains it once two sweeps' rings go unanswered.
"""

import time

import httpx
import pytest

from shared.broker import create_celery
from shared.config import Settings
from tests.e2e.conftest import backend_env
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import Process, free_port, start, wait_until_ready

pytestmark = pytest.mark.e2e


def test_work_whose_doorbells_nobody_takes_still_runs(tmp_path, model_dirs, request):
    env = backend_env("postgres", tmp_path, request) | {
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_WORKER_TASKS": "sentiment",
        "TEXTQ_SWEEP_INTERVAL_S": "0.5",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes: list[Process] = [
        start("api", ["api", "--port", str(port)], env, tmp_path / "logs"),
        start("worker", ["worker"], env, tmp_path / "logs"),
    ]
    try:
        wait_until_ready(base, processes)
        with httpx.Client(base_url=base, timeout=30) as http:
            first = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "fine"}})
            assert wait_for_job(http, first.json()["id"], timeout_s=60)["status"] == "succeeded"
            # The worker's consumer stops taking doorbells; the process lives on.
            control = create_celery(Settings(broker_url=env["TEXTQ_BROKER_URL"])).control
            # Only this test's worker: others of the run may share the Redis server.
            listening = control.inspect(timeout=10).active_queues() or {}
            ours = {
                name: {queue["name"] for queue in queues}
                for name, queues in listening.items()
                if any(queue["name"].startswith(env["TEXTQ_QUEUE_PREFIX"]) for queue in queues)
            }
            assert len(ours) == 1, listening
            ((worker_name, queues),) = ours.items()
            assert any(name.endswith(".sentiment") for name in queues), listening
            for queue in queues:
                answers = control.cancel_consumer(
                    queue, reply=True, timeout=10, destination=[worker_name]
                )
                assert answers and all("ok" in answer for a in answers for answer in a.values())
            second = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "good"}})
            finished = wait_for_job(http, second.json()["id"], timeout_s=60)
        assert finished["status"] == "succeeded", processes[1].output()
        # The drain logs once it has returned, a moment after its commit ended the job.
        deadline = time.monotonic() + 30
        while '"action": "unanswered_drain"' not in (worker_log := processes[1].output()):
            assert time.monotonic() < deadline, worker_log
            time.sleep(0.1)
    finally:
        for process in processes:
            process.stop()
