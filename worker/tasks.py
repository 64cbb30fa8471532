"""The drain task: claim pending items from the database, run them, record outcomes, repeat."""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import Celery
from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from shared import metrics
from shared.broker import DRAIN_TASK
from shared.jobs.claims import (
    claim_items,
    higher_priority_waiting,
    release_claim,
    work_waiting,
)
from shared.jobs.outcomes import record_outcomes
from shared.jobs.reads import ended_jobs_among
from shared.jobs.work import Claim, Outcome
from shared.logs import bind, log_scope
from shared.shadow.sampling import queue_shadow_work, user_work_outranks
from shared.states import Task
from shared.tracing import span
from worker import runtime as worker_runtime
from worker.engine import Runner
from worker.leases import LeaseKeeper
from worker.memory import give_back_freed_memory
from worker.model_registry import ModelUnavailable
from worker.runtime import SHUTTING_DOWN, ServedModel, WorkerRuntime

log = logging.getLogger(__name__)

T = TypeVar("T")


# One drain at a time in a process, as they share the device: the doorbell's, and the one the
# sweeper starts when doorbells go unanswered (see `drain_unanswered`).
DRAIN_LOCK = threading.Lock()


def add_drain_task(app: Celery) -> None:
    """Register the drain task on the worker's Celery app."""

    @app.task(name=DRAIN_TASK, ignore_result=True)
    def drain(task: str, **_message: object) -> int:
        # The database says what to do: the rest of the doorbell (the model it was rung
        # for and the job id, for people reading the broker) is accepted and not needed, as
        # a drain works on every model of the task this worker serves.
        with DRAIN_LOCK:
            return _drain_here(Task(task))


def drain_unanswered(task: Task) -> int:
    """Drain `task` without a doorbell; return how many items were recorded.

    The sweeper calls this when the task's work has waited through its rings with nobody
    working on it: a broker consumer that never recovered from a lost connection takes no
    doorbells while its process lives on. The database is the queue, so the worker looks
    for itself. Returns 0 at once when a drain is already running in this process.
    """
    if not DRAIN_LOCK.acquire(blocking=False):
        return 0
    try:
        return _drain_here(task)
    finally:
        DRAIN_LOCK.release()


def _drain_here(task: Task) -> int:
    runtime = worker_runtime.current()
    with log_scope(task=task.value, worker=runtime.name):
        return drain_queue(runtime, task)


def drain_queue(runtime: WorkerRuntime, task: Task) -> int:
    """Work through the task's pending items for a time slice; return how many were recorded.

    The database is the queue of record and the doorbell only says "look": one drain works
    on every job's pending items, batched together. Doorbells are per task, so a drain
    takes one claim for each model of the task this worker serves in turn, until none has
    work: one model's backlog never starves another's. When the slice ends with work left
    it rings again, so long backlogs never hold one broker message for hours and other
    queues of this worker get their turn.
    """
    served = [model for model in runtime.served_for(task) if model.broken is None]
    if not served:
        log.warning("doorbell for %s, which this worker does not serve", task.value)
        return 0
    deadline = time.monotonic() + runtime.settings.drain_slice_s
    recorded = 0
    idle: set[str] = set()
    while len(idle) < len(served) and not SHUTTING_DOWN.is_set():
        for model in served:
            if model.entry.name in idle or SHUTTING_DOWN.is_set():
                continue
            if time.monotonic() >= deadline:
                runtime.doorbell.ring(task, model_name=model.entry.name)
                return recorded
            runner = _runner_with_work(runtime, model)
            claimed = (
                patiently(runtime, functools.partial(_claim, runtime, runner)) if runner else None
            )
            if runner is None or claimed is None:
                idle.add(model.entry.name)
                continue
            with (
                runtime.using(model),
                span("textq.claim", task=task.value, items=len(claimed.items)),
            ):
                recorded += _work_on(runtime, runner, claimed)
    return recorded


def _runner_with_work(runtime: WorkerRuntime, model: ServedModel) -> Runner | None:
    """Return the model's runner; a model not loaded yet is loaded only once work waits
    for it (None: no work, or it cannot load: logged once, and its jobs wait)."""
    if model.runner is not None:
        return model.runner

    def waiting() -> bool:
        with runtime.db.read() as session:
            return work_waiting(
                session,
                task=model.entry.task,
                model=model.resolved.source,
                model_name=model.entry.name,
            )

    if not patiently(runtime, waiting):
        return None
    try:
        runner = runtime.load(model)
    except ModelUnavailable as error:
        model.broken = str(error)
        log.error(
            "cannot load model %r; its jobs wait for another worker: %s",
            model.entry.name,
            error,
            extra={"action": "model_unavailable", "task": model.entry.task.value},
        )
        runner = None
    runtime.list_in_registry()  # loaded (or broken) now, for GET /v1/models
    return runner


def _claim(runtime: WorkerRuntime, runner: Runner) -> Claim | None:
    settings = runtime.settings
    resolved = runner.loaded.resolved
    with runtime.db.write() as session:
        return claim_items(
            session,
            task=runner.task,
            model=resolved.source,
            model_name=resolved.name,
            model_revision=resolved.revision,
            worker=runtime.name,
            max_tokens=settings.max_batch_tokens * settings.claim_batches_for(runner.task),
            max_items=runner.limits.max_size * settings.claim_batches_for(runner.task),
            lease_s=settings.lease_s,
            max_attempts=settings.max_attempts,
        )


def _work_on(runtime: WorkerRuntime, runner: Runner, claim: Claim) -> int:
    """Run a claim's batches, recording outcomes every TEXTQ_RECORD_INTERVAL_S.

    Recording after each batch would cost a transaction per batch of a few short texts;
    recording only at the end would hold results (and progress) back for the whole claim.
    """
    work = _ClaimWork(runtime, runner, claim)
    started = time.perf_counter()
    # The claim's jobs go on every line logged while it runs.
    bind(job_ids=sorted(str(job_id) for job_id in work.job_ids))
    try:
        with LeaseKeeper(runtime.db, claim.token, lease_s=runtime.settings.lease_s):
            work.run_batches()
    finally:
        # Whatever stopped us (shutdown, a database blip), the rest goes back now rather
        # than when the lease lapses, and without using up an attempt.
        if work.recorded < len(claim.items):
            _release(runtime, claim)
        give_back_freed_memory()
    log.info(
        "%s: %d items in %.2f s",
        runner.task.value,
        work.recorded,
        time.perf_counter() - started,
        extra={"action": "claim_done", "task": runner.task.value},
    )
    return work.recorded


class _ClaimWork:
    """One claim's run: outcomes waiting to be recorded, and what each record learned.

    Outcomes are written by a thread of the claim's own while the model runs the next
    batches, so the model does not wait for the database (on a GPU the forward is the short
    part). One write is in flight at a time: outcomes are stored in the order they came and
    at most two records' worth is held in memory.
    """

    def __init__(self, runtime: WorkerRuntime, runner: Runner, claim: Claim) -> None:
        self.runtime, self.runner, self.claim = runtime, runner, claim
        self.job_ids = {item.job_id for item in claim.items}
        self.pending: list[Outcome] = []
        self.to_cache: dict[str, dict[str, Any]] = {}
        self.recorded = 0
        self.last_record = time.monotonic()
        self.ended_jobs: set[uuid.UUID] = set()  # cancelled since the claim: skip their items
        self.outranked = False  # higher-priority work waits: end the claim after this batch
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textq-record")
        self._writing: Future[_Recorded] | None = None

    def run_batches(self) -> None:
        """Answer what the cache can, run the rest batch by batch, recording as it goes."""
        try:
            self._run_batches()
        finally:
            # Whatever ended the run, what was handed to the writer is stored (or failed)
            # before the claim's unrecorded items go back.
            try:
                self._wait_for_write()
            finally:
                self._writer.shutdown()

    def _run_batches(self) -> None:
        plan = self.runtime.cache_of(self.runner).plan(self.claim.items)
        self.pending.extend(plan.hits)
        count_outcomes(self.runner.task, plan.hits)
        batches = self.runner.run(plan.to_run, skip=lambda item: item.job_id in self.ended_jobs)
        for outcomes in batches:
            completed, entries = plan.complete(outcomes)
            count_outcomes(self.runner.task, outcomes)
            self.pending.extend(completed)
            self.to_cache.update(entries)
            stopping = SHUTTING_DOWN.is_set()
            if stopping or self._record_due():
                self.record()
            if stopping or self.outranked:
                break
        if self.pending:
            self.record()

    def _record_due(self) -> bool:
        return time.monotonic() - self.last_record >= self.runtime.settings.record_interval_s

    def record(self) -> None:
        """Hand the pending outcomes to the writer, once the write before has ended."""
        self._wait_for_write()
        outcomes, entries = self.pending, self.to_cache
        self.pending, self.to_cache = [], {}
        self.last_record = time.monotonic()
        write = functools.partial(patiently, self.runtime, lambda: self._write(outcomes, entries))
        # The writer's log lines and spans belong to this claim, as the model's do.
        self._writing = self._writer.submit(contextvars.copy_context().run, write)

    def _wait_for_write(self) -> None:
        """Wait for the write in flight and take in what it learned (or raise its error)."""
        if self._writing is None:
            return
        writing, self._writing = self._writing, None
        done = writing.result()
        # Only once committed: a retry after a failed commit must not count twice. (Work
        # these outcomes made for another queue, insights, rang its doorbell at commit.)
        self.recorded += done.stored
        self.ended_jobs.update(done.ended_jobs)
        self.outranked = self.outranked or done.outranked

    def _write(self, outcomes: list[Outcome], entries: dict[str, dict[str, Any]]) -> _Recorded:
        with self.runtime.db.write() as session:
            stored = record_outcomes(
                session, claim_token=self.claim.token, outcomes=outcomes, cache_entries=entries
            )
            queue_shadow_work(
                session,
                settings=self.runtime.settings,
                model_name=self.runner.loaded.resolved.name,
                claim_token=self.claim.token,
                outcomes=outcomes,
            )
            # Learned at each record: items of a job cancelled since the claim are skipped,
            # and work of a higher priority ends this claim (the rest goes back).
            ended = ended_jobs_among(session, self.job_ids)
            outranked = higher_priority_waiting(
                session,
                task=self.runner.task,
                model=self.runner.loaded.resolved.source,
                model_name=self.runner.loaded.resolved.name,
                priority=self.claim.priority,
            ) or user_work_outranks(
                session,
                claim_priority=self.claim.priority,
                served=[
                    (m.entry.task, m.resolved.source, m.entry.name)
                    for m in self.runtime.served.values()
                ],
            )
        return _Recorded(stored, ended, outranked)


@dataclass(frozen=True)
class _Recorded:
    """What one committed record stored and learned."""

    stored: int
    ended_jobs: set[uuid.UUID]
    outranked: bool


def count_outcomes(task: Task, outcomes: list[Outcome]) -> None:
    """Count texts and chunks run (or found in the result cache), by what came of them."""
    kinds: Counter[str] = Counter()
    for outcome in outcomes:
        if outcome.from_cache:
            kinds["cached"] += 1
        elif outcome.error is not None:
            kinds["error"] += 1
        elif outcome.chunks:
            kinds["split"] += 1
        else:
            kinds["done"] += 1
    for kind, count in kinds.items():  # one increment a batch, not one a text
        metrics.ITEMS_PROCESSED.labels(task=task.value, outcome=kind).inc(count)


def _database_unreachable(error: BaseException) -> bool:
    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def _say_waiting(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait_s = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "database unreachable (%s); trying again in %.1f s",
        str(error).splitlines()[0] if error else "",
        wait_s,
        extra={"action": "database_wait"},
    )


def patiently(runtime: WorkerRuntime, call: Callable[[], T]) -> T:
    """Run a database step, waiting out an outage (Postgres restarting) with backoff.

    The drain keeps its doorbell and its claim while it waits, so nothing is lost and
    computed results are still recorded when the database is back. Past a lease's length
    the claim is likely gone anyway: the error goes up and the sweeper rings again later.
    """
    retrying = Retrying(
        retry=retry_if_exception(_database_unreachable),
        wait=wait_exponential(multiplier=0.25, max=8),
        stop=stop_after_delay(runtime.settings.lease_s) | stop_when_event_set(SHUTTING_DOWN),
        sleep=SHUTTING_DOWN.wait,
        before_sleep=_say_waiting,
        reraise=True,
    )
    return retrying(call)


def _release(runtime: WorkerRuntime, claim: Claim) -> None:
    try:
        with runtime.db.write() as session:
            released = release_claim(session, claim_token=claim.token)
    except Exception as error:  # the lease lapsing is the fallback
        log.warning("could not hand back a claim: %s", error, extra={"action": "release"})
        return
    if released:
        log.info("handed %d claimed items back to the queue", released)
