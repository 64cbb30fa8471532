"""One fault run: private Postgres and Redis, real `textq` processes, a workload, a verdict.

The verdict comes from the database and the webhook receiver, never from the processes'
own word: every accepted job must be finished with one stored outcome per item, no item
may have had its outcome stored twice (an audit trigger counts every store), and every
webhook event must have reached the receiver, each id always with the same body.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from shared.db import Database
from shared.migrate import upgrade
from shared.states import FINISHED_JOB_STATUSES
from tests.e2e.conftest import create_api_key
from tests.e2e.processes import Process, free_port, start_command, wait_until_ready
from tests.faults.servers import PrivatePostgres, PrivateRedis
from tests.faults.workload import POISON, LoadGenerator, LoadResult, build_workload
from tests.model_factory import EMBEDDING_DIR
from tests.webhook_receiver import Receiver

FINISHED = tuple(sorted(status.value for status in FINISHED_JOB_STATUSES))

AUDIT = """
CREATE TABLE fault_audit (item_id bigint NOT NULL, status text NOT NULL,
                          at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION fault_audit_store() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO fault_audit (item_id, status) VALUES (NEW.id, NEW.status); RETURN NEW; END $$;
CREATE TRIGGER fault_audit_store AFTER UPDATE OF status, result ON job_items FOR EACH ROW
WHEN (NEW.status IN ('done', 'error')) EXECUTE FUNCTION fault_audit_store();
"""


@dataclass
class Fault:
    """A fault struck at `struck_at`; the run was whole again at `restored_at` (epoch s)."""

    struck_at: float
    in_flight: set[int] = field(default_factory=set)
    restored_at: float | None = None
    events: set[str] = field(default_factory=set)  # webhook events owed when it was restored


# The name of the test-report property that carries a fault run's (fault, Verdict fields).
VERDICT_PROPERTY = "fault verdict"


@dataclass
class Verdict:
    scenario: str
    jobs: int
    items: int
    faults: int
    lost: int
    duplicated: int
    undelivered_webhooks: int
    recovery_s: float
    problems: list[str]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.undelivered_webhooks or self.problems)


@dataclass
class RunConfig:
    jobs: int
    duration_s: float
    models: tuple[Path, Path]  # sentiment, summarization
    root: Path
    finish_timeout_s: float = 600
    webhook_down_s: float = 20


class FaultRun:
    """The processes and records of one scenario, started on a fresh database and Redis."""

    def __init__(
        self,
        name: str,
        config: RunConfig,
        postgres: PrivatePostgres,
        *,
        env: dict[str, str] | None = None,
        poison_every: int = 0,
        api_fault: bool = False,
        worker_fault: bool = False,
    ) -> None:
        self.name = name
        self.config = config
        self.root = config.root / name
        self.logs = self.root / "logs"
        self.postgres = postgres
        self.redis = PrivateRedis(self.logs)
        self.receiver = Receiver(port=free_port())
        self.api_fault = api_fault
        self.worker_fault = worker_fault
        self.faults: list[Fault] = []
        self.notes: list[str] = []
        self.processes: list[Process] = []
        self.api: Process | None = None
        self.workers: list[Process] = []
        database = f"faults_{name}_{uuid.uuid4().hex[:6]}"
        self.database_url = postgres.create_database(database)
        upgrade(self.database_url)
        self.db = Database(self.database_url, application_name="textq-faults")
        with self.db.write() as session:
            session.execute(text(AUDIT))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        sentiment, summarization = config.models
        self.env = {
            "TEXTQ_DATA_DIR": str(self.root / "data"),
            "TEXTQ_DATABASE_URL": self.database_url,
            "TEXTQ_BROKER_URL": self.redis.url,
            "TEXTQ_QUEUE_PREFIX": f"faults-{name}",
            "TEXTQ_SENTIMENT_MODEL": str(sentiment),
            "TEXTQ_SUMMARIZATION_MODEL": str(summarization),
            "TEXTQ_EMBEDDING_MODEL": str(EMBEDDING_DIR),
            "TEXTQ_DTYPE": "float32",
            "TEXTQ_AUTH": "required",
            "TEXTQ_RATE_LIMIT_PER_S": "1000",
            "TEXTQ_RATE_LIMIT_BURST": "1000",
            "TEXTQ_LEASE_S": "5",
            "TEXTQ_SWEEP_INTERVAL_S": "1",
            "TEXTQ_LOG_LEVEL": "INFO",
            "TEXTQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            # Ten attempts over about three minutes, so a receiver down that long still gets all.
            "TEXTQ_WEBHOOK_RETRY_SCHEDULE_S": "0,2,5,10,20,30,30,30,30,30",
            "TEXTQ_MAX_ACTIVE_JOBS_PER_TENANT": "0",
            "TEXTQ_WORKER_METRICS_PORT": "0",  # two workers may run at once here
            "TEXTQ_WEBHOOKS_METRICS_PORT": "0",
        } | (env or {})
        self.headers: dict[str, str] = {}
        self.poison_every = poison_every

    # --- processes -------------------------------------------------------------------

    def _textq(self, name: str, args: list[str], *, fault: list[str] | None = None) -> Process:
        command = (
            ["-m", "tests.faults.injectors", *fault, *args] if fault else ["-m", "textq", *args]
        )
        process = start_command(name, command, self.env, self.logs)
        self.processes.append(process)
        return process

    def start_api(self) -> Process:
        fault = ["die-before-publish", str(self.root)] if self.api_fault else None
        self.api = self._textq(
            f"api-{len(self.processes)}", ["api", "--port", str(self.port)], fault=fault
        )
        return self.api

    def start_worker(self) -> Process:
        fault = ["poisoned-model"] if self.worker_fault else None
        worker = self._textq(
            f"worker-{len(self.processes)}", ["worker", "--device", "cpu"], fault=fault
        )
        self.workers.append(worker)
        return worker

    def start(self, *, workers: int = 1, receiver_up: bool = True) -> None:
        self.redis.start()
        self.headers = {"Authorization": f"Bearer {create_api_key(self.env, tenant='faults')}"}
        self.start_api()
        for _ in range(workers):
            self.start_worker()
        self._textq("webhooks", ["webhooks"])
        if receiver_up:
            self.receiver.start()
        wait_until_ready(self.base_url, self.processes, timeout_s=120)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                try:
                    process.stop()
                except AssertionError as error:
                    self.notes.append(str(error))
        self.receiver.stop()
        self.redis.close()
        self.db.dispose()

    def live_workers(self) -> list[Process]:
        return [w for w in self.workers if w.popen.poll() is None]

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-6000:]}" for p in self.processes)

    # --- observing -------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver.port}/hooks/textq"

    def running_items(self, worker: Process | None = None) -> set[int]:
        """Return the items claimed now, by any worker or by `worker` (named by its pid)."""
        query = "SELECT id FROM job_items WHERE status = 'running'"
        params = {}
        if worker is not None:
            query += " AND claimed_by LIKE :owner"
            params["owner"] = f"%:{worker.popen.pid}"
        with self.db.read() as session:
            return set(session.scalars(text(query), params))

    def wait_for_running_items(
        self, worker: Process | None = None, timeout_s: float = 90
    ) -> set[int]:
        """Wait until `worker` (or any) holds a claim; return the items it holds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if held := self.running_items(worker):
                return held
            time.sleep(0.01)
        raise AssertionError(f"{self.name}: no worker held a claim within {timeout_s} s")

    def strike(self, in_flight: set[int] | None = None) -> Fault:
        fault = Fault(struck_at=time.time(), in_flight=in_flight or set())
        self.faults.append(fault)
        return fault

    def restored(self, fault: Fault) -> None:
        """Mark the run whole again; webhook events owed now count toward this recovery."""
        fault.restored_at = time.time()
        with self.db.read() as session:
            fault.events = set(
                session.scalars(text("SELECT id FROM webhook_events WHERE status <> 'delivered'"))
            )

    def kill_worker(self, worker: Process, sig: int = signal.SIGKILL) -> int:
        worker.popen.send_signal(sig)
        return worker.popen.wait(120)

    # --- the run ---------------------------------------------------------------------

    def load(self) -> LoadGenerator:
        submissions = build_workload(
            self.config.jobs, webhook_url=self.webhook_url, poison_every=self.poison_every
        )
        return LoadGenerator(
            self.base_url, self.headers, submissions, duration_s=self.config.duration_s
        ).start()

    def wait_until_finished(self, load: LoadResult) -> None:
        """Wait until every accepted job is finished and every webhook event settled."""
        ids = list(load.accepted)
        deadline = time.monotonic() + self.config.finish_timeout_s
        while time.monotonic() < deadline:
            with self.db.read() as session:
                open_jobs = session.scalar(
                    text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status <> ALL(:done)"),
                    {"done": list(FINISHED), "ids": [uuid.UUID(i) for i in ids]},
                )
                owed = session.scalar(
                    text("SELECT count(*) FROM webhook_events WHERE status <> 'delivered'")
                )
            if not open_jobs and not owed:
                return
            time.sleep(0.5)
        self.notes.append(
            f"not settled after {self.config.finish_timeout_s:.0f} s: "
            f"{open_jobs} jobs open, {owed} webhook events owed"
        )
        # CI keeps only the test report, not the logs folder: say there what was stuck.
        print(self._stuck_report(ids))

    def _stuck_report(self, ids: list[str]) -> str:
        """Return the open items by status and lease, and each process's last warnings."""
        with self.db.read() as session:
            rows = session.execute(
                text(
                    "SELECT i.task, i.status, count(*), min(i.lease_expires_at) < now(), "
                    "max(i.claimed_by) FROM job_items i JOIN jobs j ON j.id = i.job_id "
                    "WHERE i.job_id = ANY(:ids) AND i.status NOT IN ('done', 'error') "
                    "GROUP BY i.task, i.status"
                ),
                {"ids": [uuid.UUID(i) for i in ids]},
            ).all()
        lines = ["open items (task, status, count, a lease lapsed, claimed by):"]
        lines += [f"  {tuple(row)}" for row in rows]
        for process in self.processes:
            notable = [
                line
                for line in process.output().splitlines()
                if '"WARNING"' in line or '"ERROR"' in line or "Traceback" in line
            ]
            state = process.popen.poll()
            alive = "alive" if state is None else f"exited with {state}"
            lines.append(f"--- {process.name} ({alive}): last warnings of {len(notable)}")
            lines += [f"  {line[:400]}" for line in notable[-25:]]
            lines.append(f"  (last line) {process.output().rstrip().splitlines()[-1:]}")
        return "\n".join(lines)

    def verdict(self, load: LoadResult, *, faults: int | None = None) -> Verdict:
        problems = list(self.notes) + load.server_errors
        if load.unaccepted:
            problems.append(f"{len(load.unaccepted)} submissions never accepted")
        if load.statuses.get(500):
            problems.append(f"{load.statuses[500]} answers were 500")
        ids = [uuid.UUID(i) for i in load.accepted]
        with self.db.read() as session:
            jobs = dict(
                session.execute(
                    text("SELECT id, status FROM jobs WHERE id = ANY(:ids)"), {"ids": ids}
                ).all()
            )
            items = session.execute(
                text(
                    "SELECT job_id, status, result IS NOT NULL, error, input_text "
                    "FROM job_items WHERE parent_id IS NULL AND job_id = ANY(:ids)"
                ),
                {"ids": ids},
            ).all()
            duplicated = session.scalar(
                text(
                    "SELECT count(*) FROM (SELECT item_id FROM fault_audit GROUP BY item_id "
                    "HAVING count(*) > 1) twice"
                )
            )
            events = dict(session.execute(text("SELECT id, status FROM webhook_events")).all())
        by_job: dict[uuid.UUID, list[tuple[str, bool, str | None, str]]] = defaultdict(list)
        for job_id, status, has_result, error, input_text in items:
            by_job[job_id].append((status, has_result, error, input_text))
        lost_jobs = set()
        for job_id, submission in load.accepted.items():
            key = uuid.UUID(job_id)
            rows = by_job.get(key, [])
            good = len(rows) == submission.expected_items and all(
                (status == "done" and has_result)
                or (status == "error" and POISON in input_text and error)
                for status, has_result, error, input_text in rows
            )
            if jobs.get(key) not in FINISHED or not good:
                lost_jobs.add(job_id)
        if lost_jobs:
            problems.append(f"jobs lost or incomplete: {sorted(lost_jobs)[:5]}")
        delivered = self._check_deliveries(events, problems)
        return Verdict(
            scenario=self.name,
            jobs=len(load.accepted),
            items=len(items),
            faults=len(self.faults) if faults is None else faults,
            lost=len(lost_jobs),
            duplicated=int(duplicated or 0),
            undelivered_webhooks=len(events) - delivered,
            recovery_s=self._max_recovery_s(),
            problems=problems,
        )

    def _check_deliveries(self, events: dict[str, str], problems: list[str]) -> int:
        """Return how many events the receiver got; note ids that came with two bodies."""
        bodies: dict[str, set[bytes]] = defaultdict(set)
        for request in list(self.receiver.received):
            bodies[request.headers.get("webhook-id", "")].add(request.body)
        unstable = [event_id for event_id, seen in bodies.items() if len(seen) > 1]
        if unstable:
            problems.append(f"webhook ids delivered with different bodies: {unstable[:3]}")
        missing = [event_id for event_id in events if event_id not in bodies]
        if missing:
            problems.append(f"{len(missing)} webhook events never reached the receiver")
        return len(events) - len(missing)

    def _max_recovery_s(self) -> float:
        """Return the longest time from a fault's end until the work it caught was done.

        That is: the items in flight when it struck have their outcomes, the webhook events
        owed when it ended are delivered, and new work has finished since.
        """
        worst = 0.0
        for fault in self.faults:
            restored = fault.restored_at or fault.struck_at
            with self.db.read() as session:
                done_at = (
                    [
                        _epoch(at)
                        for at in session.scalars(
                            text("SELECT finished_at FROM job_items WHERE id = ANY(:ids)"),
                            {"ids": list(fault.in_flight)},
                        )
                    ]
                    if fault.in_flight
                    else []
                )
                next_at = session.scalar(
                    text("SELECT min(finished_at) FROM job_items WHERE finished_at > :at"),
                    {"at": datetime.fromtimestamp(restored, UTC)},
                )
                delivered_at = (
                    session.scalar(
                        text(
                            "SELECT max(attempted_at) FROM webhook_attempts "
                            "WHERE event_id = ANY(:ids) AND status_code BETWEEN 200 AND 299"
                        ),
                        {"ids": list(fault.events)},
                    )
                    if fault.events
                    else None
                )
            if any(at is None for at in done_at):
                continue  # an item never finished: counted as lost, not as a recovery time
            candidates = [max(done_at, default=restored)]
            if next_at is not None:
                candidates.append(_epoch(next_at))
            if delivered_at is not None:
                candidates.append(_epoch(delivered_at))
            worst = max(worst, max(candidates) - restored)
        return round(worst, 2)


def _epoch(at: datetime | None) -> float | None:
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
