"""The faults, each injected into a live run while clients keep submitting.

Each scenario's `inject` runs beside the load; `finish` runs after the last submission
was answered, `check` once every job has finished. They note in `run.notes` any promise
they saw broken (a 500, a worker that died of a bad row, an item left running after a
graceful stop).
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy import text

from tests.faults.harness import FaultRun, RunConfig, Verdict
from tests.faults.servers import PrivatePostgres
from tests.faults.workload import LoadGenerator, LoadResult, Submission, submit_until_answered

KILLS = 5


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # what the report's reader sees
    inject: Callable[[FaultRun, LoadGenerator], None]
    finish: Callable[[FaultRun, LoadResult], None] = lambda run, load: None
    check: Callable[[FaultRun, LoadResult], None] = lambda run, load: None
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    duration_factor: float = 1.0
    poison_every: int = 0
    api_fault: bool = False
    worker_fault: bool = False
    receiver_up: bool = True
    count_faults: Callable[[FaultRun, LoadResult], int] | None = None


def kill_workers(run: FaultRun, load: LoadGenerator) -> None:
    """kill -9 the worker while it holds a claim, five times; start a new one each time."""
    worker = run.live_workers()[0]
    for _ in range(KILLS):
        run.wait_for_running_items(worker)
        fault = run.strike()
        run.kill_worker(worker)
        fault.in_flight = run.running_items(worker)  # its claim, frozen by its death
        worker = run.start_worker()
        run.restored(fault)


def flush_redis(run: FaultRun, load: LoadGenerator) -> None:
    run.wait_for_running_items()
    fault = run.strike(run.running_items())
    run.redis.client().flushall()
    run.restored(fault)


def restart_redis(run: FaultRun, load: LoadGenerator) -> None:
    run.wait_for_running_items()
    fault = run.strike(run.running_items())
    run.redis.kill()
    time.sleep(2)
    run.redis.start()
    run.restored(fault)


def restart_postgres(run: FaultRun, load: LoadGenerator) -> None:
    """Stop Postgres for a few seconds while a client keeps asking the API."""
    run.wait_for_running_items()
    probe = ApiProbe(run)
    fault = run.strike(run.running_items())
    run.postgres.stop("fast")
    probe.start()
    time.sleep(6)
    probe.stop()
    run.postgres.start()
    run.restored(fault)
    answers = Counter(probe.answers)
    wrong = {answer: n for answer, n in answers.items() if answer != (503, True)}
    if not probe.answers:
        run.notes.append("the probe got no answer while Postgres was down")
    if wrong:
        run.notes.append(f"while Postgres was down the API answered {wrong}, not 503 + Retry-After")


class ApiProbe:
    """Ask the API to read a job and to take one, over and over, recording the answers."""

    def __init__(self, run: FaultRun) -> None:
        self.run = run
        self.answers: list[tuple[int, bool] | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _probe(self) -> None:
        requests = [
            ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000", None),
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/jobs", {"task": "sentiment", "input": {"text": "probe"}}),
        ]
        with httpx.Client(base_url=self.run.base_url, headers=self.run.headers, timeout=10) as http:
            while not self._stop.is_set():
                for method, path, body in requests:
                    try:
                        response = http.request(method, path, json=body)
                    except httpx.TransportError as error:
                        self.answers.append(f"no answer: {error}")
                        continue
                    self.answers.append((response.status_code, "retry-after" in response.headers))
                time.sleep(0.2)


def poisoned_rows(run: FaultRun, load: LoadGenerator) -> None:
    """Nothing to do while it runs: the poisoned worker meets the poison rows in the load."""


def worker_survived_poison(run: FaultRun, load: LoadResult) -> None:
    if len(run.workers) != 1 or not run.live_workers():
        run.notes.append("the worker died on a poisoned row")


def count_poisoned(run: FaultRun, load: LoadResult) -> int:
    return sum(submission.poisoned for submission in load.accepted.values())


def terminate_workers(run: FaultRun, load: LoadGenerator) -> None:
    """SIGTERM the worker mid-batch, twice: it must finish the batch and hand back its claim."""
    worker = run.live_workers()[0]
    for _ in range(2):
        run.wait_for_running_items(worker)
        fault = run.strike(run.running_items(worker))
        code = run.kill_worker(worker, signal.SIGTERM)
        left = run.running_items(worker)
        if code != 0:
            run.notes.append(f"a worker stopped by SIGTERM exited with {code}")
        if left:
            run.notes.append(f"a worker stopped by SIGTERM left {len(left)} items running")
        worker = run.start_worker()
        run.restored(fault)


def receiver_down_then_up(run: FaultRun, load: LoadGenerator) -> None:
    """The receiver refuses connections for the first part of the run, then comes up."""
    fault = run.strike()
    time.sleep(run.config.webhook_down_s)
    run.receiver.start()
    run.restored(fault)
    if not fault.events:
        run.notes.append("no webhook event was owed while the receiver was down")


def kill_api_before_publish(run: FaultRun, load: LoadGenerator) -> None:
    """Mid-run, the API dies between a job's commit and its doorbell; start it again."""
    time.sleep(run.config.duration_s / 3)
    _api_dies_once(run)


def _api_dies_once(run: FaultRun) -> None:
    (run.root / "die-before-publish").touch()
    assert run.api is not None
    run.api.popen.wait(120)
    fault = run.strike()
    run.start_api()
    run.restored(fault)


def last_job_without_doorbell(run: FaultRun, load: LoadResult) -> None:
    """With everything else done, the last job's doorbell dies with the API: the sweeper rings."""
    run.wait_until_finished(load)
    submission = Submission(
        number=-1,
        kind="text",
        expected_items=3,
        body={
            "task": "sentiment",
            "input": {"texts": ["late but fine", "quiet now", "last one"]},
        },
    )
    lock = threading.Lock()
    answered: list[str | None] = []

    def submit() -> None:
        with httpx.Client(base_url=run.base_url, headers=run.headers, timeout=30) as http:
            answered.append(submit_until_answered(http, submission, load, lock, give_up_s=120))

    (run.root / "die-before-publish").touch()
    client = threading.Thread(target=submit)
    client.start()
    assert run.api is not None
    run.api.popen.wait(120)
    fault = run.strike()
    run.start_api()
    run.restored(fault)
    client.join()
    if answered and answered[0]:
        load.accepted[answered[0]] = submission
        with run.db.read() as session:
            fault.in_flight = set(
                session.scalars(
                    text("SELECT id FROM job_items WHERE job_id = CAST(:job AS uuid)"),
                    {"job": answered[0]},
                )
            )
    else:
        run.notes.append("the job whose doorbell died was never answered after the restart")


RECEIVED = re.compile(r"Task textq\.drain\[([0-9a-f-]+)\] received")


def count_redeliveries(run: FaultRun, load: LoadResult) -> int:
    """Count doorbells the broker handed out again while their first drain still ran."""
    seen: Counter[str] = Counter()
    for worker in run.workers:
        seen.update(RECEIVED.findall(worker.output()))
    return sum(n - 1 for n in seen.values() if n > 1)


def nothing_ran_twice(run: FaultRun, load: LoadResult) -> None:
    with run.db.read() as session:
        twice = session.scalar(text("SELECT count(*) FROM job_items WHERE attempts > 1"))
    if twice:
        run.notes.append(f"{twice} items were claimed twice after a redelivered doorbell")
    if not count_redeliveries(run, load):
        run.notes.append("the broker never redelivered a doorbell; the fault did not happen")


def outlive_visibility(run: FaultRun, load: LoadGenerator) -> None:
    """Nothing to do while it runs: drains last longer than the 2 s visibility timeout."""


SCENARIOS = [
    Scenario(
        "worker_kill9",
        f"kill -9 a worker mid-batch, {KILLS} times",
        kill_workers,
        duration_factor=2.5,
    ),
    Scenario("redis_flushall", "FLUSHALL on the broker", flush_redis),
    Scenario("redis_restart", "broker restarted without persistence", restart_redis),
    Scenario("postgres_restart", "Postgres stopped for 6 s", restart_postgres),
    Scenario(
        "poison_row",
        "the model fails on one input",
        poisoned_rows,
        check=worker_survived_poison,
        poison_every=5,
        worker_fault=True,
        count_faults=count_poisoned,
    ),
    Scenario(
        "sigterm", "SIGTERM a worker mid-batch, twice", terminate_workers, duration_factor=1.5
    ),
    Scenario(
        "webhook_receiver_down",
        "webhook receiver down, then up",
        receiver_down_then_up,
        receiver_up=False,
    ),
    Scenario(
        "api_killed_before_publish",
        "API killed after commit, before publish",
        kill_api_before_publish,
        finish=last_job_without_doorbell,
        api_fault=True,
    ),
    Scenario(
        "visibility_timeout",
        "a drain outlives the broker's visibility timeout",
        outlive_visibility,
        check=nothing_ran_twice,
        workers=2,
        env={
            "TEXTQ_BROKER_VISIBILITY_TIMEOUT_S": "2",
            "TEXTQ_DRAIN_SLICE_S": "60",
            # Look for overdue messages every second instead of every 100 s.
            "TEXTQ_BROKER_TRANSPORT_OPTIONS": json.dumps(
                {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}
            ),
        },
        count_faults=count_redeliveries,
    ),
]


def run_scenario(scenario: Scenario, config: RunConfig, postgres: PrivatePostgres) -> Verdict:
    """Start a fresh run, load it, strike, wait for the end, and judge it."""
    scaled = RunConfig(
        jobs=config.jobs,
        duration_s=config.duration_s * scenario.duration_factor,
        models=config.models,
        root=config.root,
        finish_timeout_s=config.finish_timeout_s,
        webhook_down_s=config.webhook_down_s,
    )
    run = FaultRun(
        scenario.name,
        scaled,
        postgres,
        env=scenario.env,
        poison_every=scenario.poison_every,
        api_fault=scenario.api_fault,
        worker_fault=scenario.worker_fault,
    )
    try:
        run.start(workers=scenario.workers, receiver_up=scenario.receiver_up)
        load = run.load()
        try:
            scenario.inject(run, load)
        except AssertionError as error:
            run.notes.append(str(error))
        result = load.join()
        scenario.finish(run, result)
        run.wait_until_finished(result)
        scenario.check(run, result)
        faults = scenario.count_faults(run, result) if scenario.count_faults else None
        verdict = run.verdict(result, faults=faults)
        if not verdict.clean:
            verdict.problems.append(f"logs under {run.logs}")
        return verdict
    finally:
        run.stop()
