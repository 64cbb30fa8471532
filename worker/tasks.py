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
    models_outranking,
    release_claim,
    work_waiting,
)
from shared.jobs.outcomes import record_outcomes
from shared.jobs.reads import ended_jobs_among
from shared.jobs.work import Claim, Outcome
from shared.logs import bind, log_scope
from shared.shadow.sampling import queue_shadow_work
from shared.states import Task
from shared.tracing import span
from shared.unanswered_rings import RING_MEMORY_S
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
    """Work through the task's pending items for a time slice; return how many were recorded
    (with those of the other task's drain it handed over to, if it did).

    The database is the queue of record and the doorbell only says "look": one drain works
    on every job's pending items, batched together. Doorbells are per task, so a drain
    takes one claim for each model of the task this worker serves in turn, until none has
    work: one model's backlog never starves another's. When the slice ends with work left
    it rings again, so long backlogs never hold one broker message for hours and other
    queues of this worker get their turn.

    While it works the drain holds its queues' doorbells, so new jobs there do not ring
    (`Doorbell.hold`); once no model has work it lets go and looks once more. The first
    claim that fills its budget rings once for another worker to help.

    Work of a higher priority than a claim's, for any model this worker serves, ends the
    claim after its batch (`_ClaimWork`). That model runs next: in this drain if it is of
    this task; else this slice ends (ringing to come back) and the other task's drain runs
    here and now, rather than behind whatever the broker hands this worker next.
    """
    recorded, hand_over_to = _drain_slice(runtime, task, may_hand_over=True)
    if hand_over_to is not None:
        with log_scope(task=hand_over_to.value):
            more, _ = _drain_slice(runtime, hand_over_to, may_hand_over=False)
        recorded += more
    return recorded


def _drain_slice(
    runtime: WorkerRuntime, task: Task, *, may_hand_over: bool
) -> tuple[int, Task | None]:
    """Run one drain of `task` (see `drain_queue`); return the items recorded, and the task
    whose higher-priority work ended it, to be drained next (None: it ended otherwise, or
    not `may_hand_over`, and that task's doorbell was rung instead)."""
    doorbell = _HeldDoorbell(runtime, task)
    served = [model for model in runtime.served_for(task) if model.broken is None]
    if not served:
        doorbell.release()
        log.warning("doorbell for %s, which this worker does not serve", task.value)
        return 0, None
    deadline = time.monotonic() + runtime.settings.drain_slice_s
    recorded = 0
    idle: set[str] = set()
    passed_on = False
    claims = {model.entry.name: _Claims(runtime) for model in served}
    turns = list(served)  # the order models take their turns in, each round

    def end_slice(first: list[tuple[Task, str]]) -> tuple[int, Task | None]:
        doorbell.release()
        for each in served:  # their jobs' rings were skipped while held
            runtime.doorbell.ring(task, model_name=each.entry.name)
        if first and may_hand_over:
            return recorded, first[0][0]
        for other_task, name in first:  # the drain of the work that outranked this one
            runtime.doorbell.ring(other_task, model_name=name)
        return recorded, None

    try:
        while not SHUTTING_DOWN.is_set():
            if len(idle) == len(served):
                if not doorbell.held:
                    break  # nothing came since the drain let go of its doorbells
                doorbell.release()
                # A model that failed to load stays out of the last look (it logged why).
                idle = {model.entry.name for model in served if model.broken is not None}
                continue
            for model in turns:
                if model.entry.name in idle or SHUTTING_DOWN.is_set():
                    continue
                # A claim taken ahead runs even past the slice, rather than go back unrun.
                if time.monotonic() >= deadline and not claims[model.entry.name].holds_one:
                    if any(claims[m.entry.name].holds_one for m in served):
                        continue  # (another model's, kept as it holds urgent work)
                    return end_slice([])
                runner = _runner_with_work(runtime, model)
                taken = claims[model.entry.name].take(runner) if runner else None
                if runner is None or taken is None:
                    idle.add(model.entry.name)
                    continue
                doorbell.hold()
                claim = taken.claim
                if claim.full and not passed_on:
                    # A backlog: wake one more worker of the model, if there is one.
                    runtime.doorbell.ring(task, model_name=model.entry.name, always=True)
                    passed_on = True
                # The next claim is this model's when every other is idle: take it ahead,
                # unless this one is the last of the slice. Not behind a lost claim's items
                # (if they kill the worker again, the claim ahead must not lose an attempt),
                # nor behind texts with a deadline (their job's next texts would wait as
                # started: see `claim_items`).
                others_idle = all(m.entry.name in idle for m in served if m is not model)
                wanted = claim.full and not (claim.retried or claim.deadlines) and others_idle
                ahead = (
                    claims[model.entry.name]
                    if wanted and time.monotonic() < deadline and not SHUTTING_DOWN.is_set()
                    else None
                )
                try:
                    with (
                        runtime.using(model),
                        span("textq.claim", task=task.value, items=len(taken.claim.items)),
                    ):
                        worked = _work_on(runtime, runner, taken.claim, taken=taken, ahead=ahead)
                finally:
                    taken.lease.stop()  # `_work_on` stopped it, unless it never started
                recorded += worked.recorded
                if not worked.outranked_by:
                    continue
                # Higher-priority work waits: its model's turn comes next, in this drain if
                # it is of this task, else in its own task's drain, which ends this slice
                # (one drain runs at a time in a worker). A claim taken ahead that was kept
                # holds this model's urgent work, which is no longer pending: it goes first.
                kept = [model.entry.name] if claims[model.entry.name].holds_one else []
                urgent = kept + [name for each, name in worked.outranked_by if each is task]
                if not urgent:
                    return end_slice(worked.outranked_by)
                turns = sorted(served, key=lambda m: m.entry.name not in urgent)
                idle.difference_update(urgent)
                break
    finally:
        if doorbell.held:  # stopped by an error or a shutdown, before the last look
            doorbell.release()
            for each in served:
                runtime.doorbell.ring(task, model_name=each.entry.name)
        for pending in claims.values():
            pending.close()
    return recorded, None


class _HeldDoorbell:
    """A drain's hold on the doorbells of its task's queues (see `Doorbell.hold`). A drain
    starts out holding them, as the ring that started it marked its queue; the hold is
    renewed with the first claim and before it could expire, and let go when no model has
    work (then taken again if the last look finds some)."""

    def __init__(self, runtime: WorkerRuntime, task: Task) -> None:
        self.doorbell = runtime.doorbell
        # Held: the queues of the models this drain looks at. Let go: those and the task's
        # own queue and broken models', whose rings (which started it) it may have taken.
        self.looked_at = [
            runtime.settings.queue_for(task, model.entry.name)
            for model in runtime.served_for(task)
            if model.broken is None
        ]
        self.queues = [runtime.settings.queue_for(task)] + [
            runtime.settings.queue_for(task, model.entry.name) for model in runtime.served_for(task)
        ]
        self.held = True
        self._renew_at = 0.0  # renewed with the first claim

    def hold(self) -> None:
        if not self.held or time.monotonic() >= self._renew_at:
            self.doorbell.hold(self.looked_at)
            self.held = True
            self._renew_at = time.monotonic() + RING_MEMORY_S / 2

    def release(self) -> None:
        if self.held:
            self.doorbell.release(self.queues)
            self.held = False


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
            ahead=ahead,
        )


@dataclass(frozen=True)
class _Worked:
    """What a claim's run came to: the items recorded, and the models whose work of a
    higher priority ended it early ((task, catalogue name); empty if none did)."""

    recorded: int
    outranked_by: list[tuple[Task, str]]


def _work_on(
    runtime: WorkerRuntime,
    runner: Runner,
    claim: Claim,
    *,
    taken: _Taken | None = None,
    ahead: _Claims | None = None,
) -> _Worked:
    """Run a claim's batches, recording outcomes every TEXTQ_RECORD_INTERVAL_S.

    Recording after each batch would cost a transaction per batch of a few short texts;
    recording only at the end would hold results (and progress) back for the whole claim.
    `taken`: the claim already made ready, its lease kept (`_take`). `ahead`: where to take
    the model's next claim while this one runs; handed back if this one ends outranked,
    unless it holds work of a higher priority than this one's (the urgent work itself).
    """
    lease = taken.lease if taken else _lease_of(runtime, claim)
    if ahead is not None:  # before this claim's jobs are bound to the log context
        ahead.take_ahead(runner)
    work = _ClaimWork(runtime, runner, claim, taken.ready if taken else None)
    started = time.perf_counter()
    # The claim's jobs go on every line logged while it runs.
    bind(job_ids=sorted(str(job_id) for job_id in work.job_ids))
    try:
        if taken is not None and taken.ahead:
            # A job cancelled while the claim before ran: none of its items are run.
            work.ended_jobs.update(patiently(runtime, work.ended))
        work.run_batches()
    finally:
        lease.stop()
        if ahead is not None and SHUTTING_DOWN.is_set():
            ahead.drop()
        elif ahead is not None and work.outranked_by:
            # The waiting work is claimed next, unless the claim ahead is (or holds) it.
            ahead.drop(below=claim.priority + 1)
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
    return _Worked(work.recorded, work.outranked_by)


def _lease_of(runtime: WorkerRuntime, claim: Claim) -> LeaseKeeper:
    return LeaseKeeper(runtime.db, claim.token, lease_s=runtime.settings.lease_s).start()


@dataclass(frozen=True)
class _Ready:
    """A claim made ready for the model: what the result cache answers, and the rest
    tokenized and planned into batches (`Runner.prepare`)."""

    plan: CachePlan
    prepared: Prepared


def _make_ready(runtime: WorkerRuntime, runner: Runner, claim: Claim) -> _Ready:
    plan = runtime.cache_of(runner).plan(claim.items)
    return _Ready(plan, runner.prepare(plan.to_run))


@dataclass(frozen=True)
class _Taken:
    """A claim made ready to run, its lease kept from the moment it was taken."""

    claim: Claim
    ready: _Ready
    lease: LeaseKeeper
    ahead: bool = False  # taken while another claim ran


def _take(runtime: WorkerRuntime, runner: Runner, *, ahead: bool = False) -> _Taken | None:
    """Claim the runner's next items and make them ready (None: no work waits).

    `ahead`: while another claim runs; a lost claim's items and texts with a deadline are
    then left for the claim after it (`claim_items`).
    """
    claim = patiently(runtime, functools.partial(_claim, runtime, runner, ahead=ahead))
    if claim is None:
        return None
    lease = _lease_of(runtime, claim)
    try:
        return _Taken(claim, _make_ready(runtime, runner, claim), lease, ahead)
    except BaseException:
        lease.stop()
        _release(runtime, claim)
        raise


class _Claims:
    """One model's claims in a drain; the next taken on a thread while the current runs.

    With a fast model the claim query and the tokenizer are much of a worker's time (a
    quarter with the near-free model of `benchmarks/pipeline.py`). Both wait outside the
    GIL (the database's socket, the Rust tokenizer), so on a thread of their own they
    overlap the model instead of following it. Taken ahead only behind a claim that filled
    its budget (a backlog), so small jobs that arrive one by one are still claimed
    together, as late as possible; and only when the model's next turn comes at once.
    The result cache is read for the claim ahead before the claim running has stored its
    results: a text repeated across the two runs again (its result is the same).
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self._thread: ThreadPoolExecutor | None = None
        self._next: Future[_Taken | None] | None = None

    def take(self, runner: Runner) -> _Taken | None:
        """Return the claim taken ahead, if any; else claim now (None: no work waits)."""
        if self._next is not None:
            future, self._next = self._next, None
            taken = future.result()
            if taken is not None:
                return taken
            # Nothing waited then; the records since may have split texts into new chunks.
        return _take(self.runtime, runner)

    @property
    def holds_one(self) -> bool:
        """Whether a claim is being taken ahead, or was (it may have found no work)."""
        return self._next is not None

    def take_ahead(self, runner: Runner) -> None:
        """Start taking the next claim on this model's thread."""
        if self._next is not None:
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textq-claim")
        # Its log lines and spans belong to this drain, as the claim before's do.
        run = contextvars.copy_context().run
        self._next = self._thread.submit(run, _take, self.runtime, runner, ahead=True)

    def ahead(self) -> _Taken | None:
        """Wait for the claim being taken ahead and return it, still ahead (None: none
        taken, or no work waited)."""
        return None if self._next is None else self._next.result()

    def drop(self, *, below: int | None = None) -> None:
        """Hand back the claim taken ahead, unrun, without using up an attempt (with
        `below`: only if its priority is below that)."""
        try:
            taken = self.ahead()
        except Exception as error:  # `_take` handed back what it had claimed, if anything
            self._next = None
            log.warning("could not take a claim ahead: %s", error, extra={"action": "release"})
            return
        if taken is not None and below is not None and taken.claim.priority >= below:
            return
        self._next = None
        if taken is None:
            return
        taken.lease.stop()
        _release(self.runtime, taken.claim)

    def close(self) -> None:
        """Hand back what was taken ahead, and end the thread."""
        self.drop()
        if self._thread is not None:
            self._thread.shutdown()


class _ClaimWork:
    """One claim's run: outcomes waiting to be recorded, and what each record learned.

    Outcomes are written by a thread of the claim's own while the model runs the next
    batches, so the model does not wait for the database (on a GPU the forward is the short
    part). One write is in flight at a time: outcomes are stored in the order they came and
    at most two records' worth is held in memory.
    """

    def __init__(
        self, runtime: WorkerRuntime, runner: Runner, claim: Claim, ready: _Ready | None = None
    ) -> None:
        self.runtime, self.runner, self.claim = runtime, runner, claim
        self.ready = ready
        self.job_ids = {item.job_id for item in claim.items}
        self.pending: list[Outcome] = []
        self.to_cache: dict[str, dict[str, Any]] = {}
        self.recorded = 0
        self.last_record = time.monotonic()
        self.ended_jobs: set[uuid.UUID] = set()  # cancelled since the claim: skip their items
        # Models with higher-priority work waiting: end the claim after this batch.
        self.outranked_by: list[tuple[Task, str]] = []
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
        ready = self.ready or _make_ready(self.runtime, self.runner, self.claim)
        plan = ready.plan
        self.pending.extend(plan.hits)
        count_outcomes(self.runner.task, plan.hits)
        batches = self.runner.run_prepared(
            ready.prepared, skip=lambda item: item.job_id in self.ended_jobs
        )
        for outcomes in batches:
            completed, entries = plan.complete(outcomes)
            count_outcomes(self.runner.task, outcomes)
            self.pending.extend(completed)
            self.to_cache.update(entries)
            stopping = SHUTTING_DOWN.is_set()
            if stopping or self._record_due():
                self.record()
            if stopping or self.outranked_by:
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
        self.outranked_by = done.outranked_by or self.outranked_by

    def ended(self) -> set[uuid.UUID]:
        """Return the claim's jobs that have ended (cancelled, expired, failed)."""
        with self.runtime.db.read() as session:
            return ended_jobs_among(session, self.job_ids)

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
            # and work of a higher priority, for any model this worker can run, ends this
            # claim (the rest goes back).
            ended = ended_jobs_among(session, self.job_ids)
            outranked_by = models_outranking(
                session,
                served=[
                    (m.entry.task, m.resolved.source, m.entry.name)
                    for m in self.runtime.served.values()
                    if m.broken is None
                ],
                priority=self.claim.priority,
            )
        return _Recorded(stored, ended, outranked_by)


@dataclass(frozen=True)
class _Recorded:
    """What one committed record stored and learned."""

    stored: int
    ended_jobs: set[uuid.UUID]
    outranked_by: list[tuple[Task, str]]  # models with higher-priority work: (task, name)


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
