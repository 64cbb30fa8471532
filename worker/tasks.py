"""The drain task: claim pending items from the database, run them, record outcomes, repeat."""

from __future__ import annotations

import contextvars
import dataclasses
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
from worker.cache import CachePlan
from worker.engine import Prepared, Runner
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

    While one model alone has work, its next claim is made and prepared (tokenized, its
    batches planned) on a thread while the model runs the current one, so the model does
    not wait for the database or the tokenizer between claims.
    """
    served = [model for model in runtime.served_for(task) if model.broken is None]
    if not served:
        log.warning("doorbell for %s, which this worker does not serve", task.value)
        return 0
    deadline = time.monotonic() + runtime.settings.drain_slice_s
    recorded = 0
    idle: set[str] = set()
    ahead = _Ahead(runtime)
    try:
        while len(idle) < len(served) and not SHUTTING_DOWN.is_set():
            for model in served:
                if model.entry.name in idle or SHUTTING_DOWN.is_set():
                    continue
                if time.monotonic() >= deadline:
                    runtime.doorbell.ring(task, model_name=model.entry.name)
                    return recorded
                runner = _runner_with_work(runtime, model)
                ready = ahead.take(model) if runner else None
                if runner is not None and ready is None:
                    ready = _make_ready(runtime, runner)
                if runner is None or ready is None:
                    idle.add(model.entry.name)
                    continue
                # Only while this model alone has work: its next turn comes right after.
                alone = len(idle) == len(served) - 1
                with (
                    runtime.using(model),
                    span("textq.claim", task=task.value, items=len(ready.claim.items)),
                ):
                    if alone and deadline - time.monotonic() > AHEAD_MIN_SLICE_LEFT_S:
                        ahead.start(model, runner)
                    recorded += _work_on(runtime, runner, ready, ahead=ahead)
    finally:
        ahead.close()
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


def _claim(runtime: WorkerRuntime, runner: Runner, *, ahead: bool = False) -> Claim | None:
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
            with_deadlines=not ahead,
        )


@dataclass(frozen=True)
class _Ready:
    """A claim made ready to run: its result-cache plan and its prepared batches, with its
    lease kept from the moment it was made."""

    claim: Claim
    plan: CachePlan
    prepared: Prepared
    keeper: LeaseKeeper
    made_ahead: bool = False


def _make_ready(runtime: WorkerRuntime, runner: Runner, *, ahead: bool = False) -> _Ready | None:
    """Claim the model's next items and prepare them; None: nothing to claim.

    A claim made `ahead` of its run leaves out jobs with a deadline, whose texts must not
    be held while it passes: they wait for the claim made when the model is free.
    """
    claim = patiently(runtime, functools.partial(_claim, runtime, runner, ahead=ahead))
    return None if claim is None else _ready(runtime, runner, claim)


def _ready(runtime: WorkerRuntime, runner: Runner, claim: Claim) -> _Ready:
    """Keep a claim's lease and prepare its items; on failure the claim goes back."""
    keeper = LeaseKeeper(runtime.db, claim.token, lease_s=runtime.settings.lease_s).start()
    try:
        plan = runtime.cache_of(runner).plan(claim.items)
        prepared = runner.prepare(plan.to_run)
    except BaseException:
        keeper.stop()
        _release(runtime, claim)
        raise
    return _Ready(claim, plan, prepared, keeper)


class _Ahead:
    """The next claim of the model at work, made ready on a thread of its own.

    At most one is held. One not taken (the drain ended, the claim before it was outranked
    or failed) goes back to the queue at once, without using up an attempt.
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self._model: ServedModel | None = None
        self._future: Future[_Ready | None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textq-prefetch")

    def start(self, model: ServedModel, runner: Runner) -> None:
        """Start making the model's next claim ready (if none is held already)."""
        if self._future is not None or runner.shares_tokenizer or not runner.claims_ahead:
            return
        make = functools.partial(_make_ready, self.runtime, runner, ahead=True)
        self._model = model
        self._future = self._thread.submit(contextvars.copy_context().run, make)

    def take(self, model: ServedModel) -> _Ready | None:
        """Return the claim made ready for this model, waiting for it; None if none was
        made (nothing was left to claim, or it is another model's: that one goes back)."""
        if self._future is None:
            return None
        if self._model is not model:
            self.drop()
            return None
        future, self._future = self._future, None
        ready = future.result()
        return None if ready is None else dataclasses.replace(ready, made_ahead=True)

    def drop(self) -> None:
        """Hand back the claim made ahead, if any, once it is made."""
        future, self._future = self._future, None
        if future is not None:
            try:
                ready = future.result()
            except Exception as error:  # its claim, if made, went back when it failed
                log.warning("could not claim ahead: %s", error, extra={"action": "claim_ahead"})
                ready = None
            if ready is not None:
                ready.keeper.stop()
                _release(self.runtime, ready.claim)

    def close(self) -> None:
        """Hand back what is held and end the thread (the drain is over)."""
        self.drop()
        self._thread.shutdown()


# The next claim is made ahead only while this much of the drain's slice is left: one made
# at the slice's end would go straight back.
AHEAD_MIN_SLICE_LEFT_S = 1.0


def _work_on(
    runtime: WorkerRuntime, runner: Runner, ready: _Ready, *, ahead: _Ahead | None = None
) -> int:
    """Run a claim's batches, recording outcomes every TEXTQ_RECORD_INTERVAL_S.

    Recording after each batch would cost a transaction per batch of a few short texts;
    recording only at the end would hold results (and progress) back for the whole claim.
    A next claim being made ready (`ahead`) goes back if this one fails, or ends because
    work of a higher priority waits: it may have been made before that work came.
    """
    claim = ready.claim
    work = _ClaimWork(runtime, runner, ready)
    started = time.perf_counter()
    # The claim's jobs go on every line logged while it runs.
    bind(job_ids=sorted(str(job_id) for job_id in work.job_ids))
    try:
        try:
            if ready.made_ahead:  # a job may have been cancelled since: skip its items
                work.ended_jobs |= patiently(runtime, work.jobs_ended)
            work.run_batches()
        finally:
            ready.keeper.stop()
        if work.outranked and ahead is not None:
            ahead.drop()
    except BaseException:
        if ahead is not None:
            ahead.drop()
        raise
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
    part). One write is in flight at a time, and outcomes are stored in the order they came:
    while a write lasts, the next one gathers what the model finishes meanwhile (at most
    the claim's outcomes are held in memory).
    """

    def __init__(self, runtime: WorkerRuntime, runner: Runner, ready: _Ready) -> None:
        self.runtime, self.runner, self.claim = runtime, runner, ready.claim
        self.plan, self.prepared = ready.plan, ready.prepared
        claim = ready.claim
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
        plan = self.plan
        self.pending.extend(plan.hits)
        count_outcomes(self.runner.task, plan.hits)
        batches = self.runner.run_prepared(
            self.prepared, skip=lambda item: item.job_id in self.ended_jobs
        )
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

    def jobs_ended(self) -> set[uuid.UUID]:
        """Return the claim's jobs that ended (were cancelled) since it was made."""
        with self.runtime.db.read() as session:
            return ended_jobs_among(session, self.job_ids)

    def _record_due(self) -> bool:
        """Whether to hand the pending outcomes to the writer now: the interval has passed
        and the write before has ended. While it has not, outcomes keep gathering for the
        next write instead of the model waiting for the database."""
        if self._writing is not None and not self._writing.done():
            return False
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
