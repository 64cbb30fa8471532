"""A worker killed mid-job (kill -9): a new worker finishes the job, every item exactly once."""

import signal
import time

import httpx
import pytest
from sqlalchemy import func, select

from shared.db import Database
from shared.models import JobItem
from tests.conftest import BACKENDS
from tests.e2e.conftest import backend_env
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import Process, free_port, start, wait_until_ready

pytestmark = pytest.mark.e2e

TEXTS = [
    f"feedback number {n}: " + "the product works but the delivery was slow " * 8
    for n in range(6000)
]


def running_items(db: Database) -> set[int]:
    with db.read() as session:
        return set(session.scalars(select(JobItem.id).where(JobItem.status == "running")))


def kill_while_holding_a_claim(
    http: httpx.Client, db: Database, job_id: str, start_worker, attempts: int = 5
) -> tuple[set[int], Process]:
    """Kill -9 workers until one dies holding items; return those items and a live worker."""
    worker = start_worker()
    for _ in range(attempts):
        deadline = time.monotonic() + 120
        while not running_items(db):
            assert time.monotonic() < deadline, worker.output()
            assert http.get(f"/v1/jobs/{job_id}").json()["status"] != "succeeded"
            time.sleep(0.01)
        worker.popen.send_signal(signal.SIGKILL)
        worker.popen.wait()
        held = running_items(db)  # the dead worker's claim: nobody else can touch it now
        worker = start_worker()
        if held:
            return held, worker
    raise AssertionError("never killed a worker while it held a claim")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_survives_its_worker_being_killed(backend, tmp_path, model_dirs, request):
    env = backend_env(backend, tmp_path, request) | {
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_WORKER_TASKS": "sentiment",
        "TEXTQ_LEASE_S": "2",
        "TEXTQ_SWEEP_INTERVAL_S": "0.5",
        "TEXTQ_MAX_ITEMS_PER_JOB": "10000",
    }
    url = env.get("TEXTQ_DATABASE_URL") or f"sqlite:///{env['TEXTQ_DATA_DIR']}/textq.db"
    db = Database(url, application_name="textq-tests")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start("api", ["api", "--port", str(port)], env, tmp_path / "logs")
    workers: list[Process] = []

    def start_worker() -> Process:
        workers.append(start(f"worker-{len(workers)}", ["worker"], env, tmp_path / "logs"))
        return workers[-1]

    try:
        wait_until_ready(base, [api])
        with httpx.Client(base_url=base, timeout=30) as http:
            job_id = http.post(
                "/v1/jobs", json={"task": "sentiment", "input": {"texts": TEXTS}}
            ).json()["id"]
            held, _ = kill_while_holding_a_claim(http, db, job_id, start_worker)
            finished = wait_for_job(http, job_id, timeout_s=180)
        assert finished["status"] == "succeeded", workers[-1].output()
        assert finished["progress"] == {
            "total": 6000,
            "done": 6000,
            "errored": 0,
            "cached": 0,
            "chunks": {"total": 0, "done": 0},
        }
        with db.read() as session:
            statuses = dict(
                session.execute(select(JobItem.status, func.count()).group_by(JobItem.status)).all()
            )
            retried = session.execute(
                select(JobItem.id, JobItem.attempts).where(JobItem.id.in_(held))
            ).all()
        assert statuses == {"done": 6000}
        assert {attempts for _, attempts in retried} == {2}, "each held item re-ran once"
    finally:
        db.dispose()
        for process in (*workers, api):
            process.stop()
