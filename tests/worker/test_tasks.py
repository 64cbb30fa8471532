import pytest
from sqlalchemy import func, select, update

from shared.jobs.cancel import cancel_job
from shared.jobs.result_cache import cached_results, forget_results_before, remember_results
from shared.models import CachedResult, Job, JobItem
from shared.states import JobStatus, Task
from tests.broker import published
from tests.factories import make_job
from worker import runtime as worker_runtime
from worker import tasks
from worker.tasks import _work_on, drain_queue

STORY = "The parcel arrived late and the box was damaged."


def jobs_of(db, task):
    with db.read() as session:
        return session.scalars(select(Job).where(Job.task == task.value)).all()


def test_one_drain_batches_items_of_every_waiting_job(runtime, db, settings):
    model = settings.sentiment_model
    first = make_job(db, texts=["I love it", "meh"], model=model)
    second = make_job(db, texts=["awful", "fine", "great"], model=model)
    summary = make_job(
        db, texts=["A story."], task=Task.SUMMARIZE, model=settings.summarization_model
    )

    assert drain_queue(runtime, Task.SENTIMENT) == 5
    for job in jobs_of(db, Task.SENTIMENT):
        assert job.status == JobStatus.SUCCEEDED
        assert job.done_items == job.total_items
        assert job.model_revision.startswith("sha256:")
    with db.read() as session:
        tokens = session.scalars(
            select(JobItem.claim_token).where(JobItem.job_id.in_([first.id, second.id]))
        ).all()
    assert len(set(tokens)) == 1, "both jobs' texts should share one claim"
    assert jobs_of(db, Task.SUMMARIZE)[0].status == JobStatus.QUEUED

    assert drain_queue(runtime, Task.SUMMARIZE) == 1
    with db.read() as session:
        assert session.get(Job, summary.id).status == JobStatus.SUCCEEDED


def test_a_drain_that_runs_out_of_time_rings_again(runtime, db, settings):
    make_job(db, texts=["a", "b"], model=settings.sentiment_model)
    runtime.settings = settings.model_copy(update={"drain_slice_s": 0.0})
    assert drain_queue(runtime, Task.SENTIMENT) == 0
    assert len(published(settings, Task.SENTIMENT)) == 1
    assert jobs_of(db, Task.SENTIMENT)[0].status == JobStatus.QUEUED


def test_shutdown_finishes_the_batch_and_hands_back_the_rest(runtime, db, settings):
    make_job(db, texts=[f"text {n}" for n in range(6)], model=settings.sentiment_model)
    runner = runtime.runners[Task.SENTIMENT]
    runner.limits = runner.limits.__class__(max_tokens=4096, max_size=2)
    from tests.factories import claim

    claimed = claim(db, model=settings.sentiment_model)
    worker_runtime.SHUTTING_DOWN.set()
    try:
        assert _work_on(runtime, runner, claimed).recorded == 2
    finally:
        worker_runtime.SHUTTING_DOWN.clear()
    with db.read() as session:
        statuses = sorted(session.scalars(select(JobItem.status)).all())
    assert statuses == ["done"] * 2 + ["pending"] * 4


def test_a_claim_interrupted_by_an_error_goes_back_at_once(runtime, db, settings, monkeypatch):
    make_job(db, texts=["a", "b", "c"], model=settings.sentiment_model)
    from tests.factories import claim

    def database_blip(*args, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(tasks, "record_outcomes", database_blip)
    claimed = claim(db, model=settings.sentiment_model)
    runner = runtime.runners[Task.SENTIMENT]
    with pytest.raises(ConnectionError):
        _work_on(runtime, runner, claimed)
    with db.read() as session:
        rows = session.execute(select(JobItem.status, JobItem.attempts)).all()
    assert set(rows) == {("pending", 0)}


def test_repeated_texts_run_once_and_later_jobs_reuse_them(runtime, db, settings):
    model = settings.sentiment_model
    first = make_job(db, texts=["love it", "love it", "meh", "love it"], model=model)
    drain_queue(runtime, Task.SENTIMENT)
    second = make_job(db, texts=["meh", "love it", "new text"], model=model)
    summary = make_job(
        db, texts=["love it"], task=Task.SUMMARIZE, model=settings.summarization_model
    )
    drain_queue(runtime, Task.SENTIMENT)
    drain_queue(runtime, Task.SUMMARIZE)
    with db.read() as session:
        jobs = {job.id: job for job in session.scalars(select(Job))}
        results = {(row.job_id, row.idx): row.result for row in session.scalars(select(JobItem))}
        cached_keys = session.scalar(select(func.count()).select_from(CachedResult))
    assert (jobs[first.id].done_items, jobs[first.id].cached_items) == (4, 2)
    assert (jobs[second.id].done_items, jobs[second.id].cached_items) == (3, 2)
    assert jobs[summary.id].cached_items == 0  # another task is another key
    assert results[(second.id, 0)] == results[(first.id, 2)]
    assert results[(second.id, 1)] == results[(first.id, 0)] == results[(first.id, 3)]
    assert cached_keys == 4  # love it, meh, new text, and the summary


def test_a_sampled_summary_is_never_answered_from_the_cache_nor_stored(runtime, db, settings):
    model = settings.summarization_model
    sampled = {"do_sample": True, "max_length": 8}
    first = make_job(db, texts=[STORY, STORY], task=Task.SUMMARIZE, model=model, options=sampled)
    drain_queue(runtime, Task.SUMMARIZE)
    second = make_job(db, texts=[STORY], task=Task.SUMMARIZE, model=model, options=sampled)
    drain_queue(runtime, Task.SUMMARIZE)
    with db.read() as session:
        jobs = [session.get(Job, job.id) for job in (first, second)]
        stored = session.scalar(select(func.count()).select_from(CachedResult))
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 2
    assert [job.cached_items for job in jobs] == [0, 0]
    assert stored == 0

    # The same text without sampling is cached as before: only sampling opts out.
    make_job(db, texts=[STORY, STORY], task=Task.SUMMARIZE, model=model)
    drain_queue(runtime, Task.SUMMARIZE)
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(CachedResult)) == 1


def test_the_cache_can_be_turned_off(runtime, db, settings):
    for cache in runtime.caches.values():
        cache.enabled = False
    job = make_job(db, texts=["same", "same"], model=settings.sentiment_model)
    drain_queue(runtime, Task.SENTIMENT)
    with db.read() as session:
        assert session.get(Job, job.id).cached_items == 0
        assert session.scalar(select(func.count()).select_from(CachedResult)) == 0


def test_old_cache_entries_are_forgotten(db):
    from datetime import timedelta

    from shared.models import utcnow

    with db.write() as session:
        remember_results(session, {"a" * 64: {"label": "x"}})
        remember_results(session, {"a" * 64: {"label": "changed"}})
    with db.read() as session:
        assert cached_results(session, ["a" * 64]) == {"a" * 64: {"label": "x"}}
    with db.write() as session:
        assert forget_results_before(session, utcnow() - timedelta(hours=1)) == 0
        assert forget_results_before(session, utcnow() + timedelta(seconds=1)) == 1


def six_texts_in_batches_of_two(runtime, db, settings, monkeypatch, during_first_batch):
    """Make a six-text sentiment job and have the runner run two texts a batch, recording
    after each, calling `during_first_batch(job)` mid-batch; return the job and the list
    the sizes of the batches run go to."""
    job = make_job(db, texts=[f"text {n}" for n in range(6)], model=settings.sentiment_model)
    runner = runtime.runners[Task.SENTIMENT]
    runner.limits = runner.limits.__class__(max_tokens=4096, max_size=2)
    runtime.settings = settings.model_copy(update={"record_interval_s": 0.0})
    forward = runner._forward
    batches = []

    def forward_and_interfere(batch, encoded, tensors):
        batches.append(len(batch))
        if len(batches) == 1:
            during_first_batch(job)
        return forward(batch, encoded, tensors)

    monkeypatch.setattr(runner, "_forward", forward_and_interfere)
    return job, batches


def work_on_six_texts_in_batches_of_two(runtime, db, settings, monkeypatch, during_first_batch):
    """Claim a six-text job and work on it, calling `during_first_batch(job)` mid-batch."""
    from tests.factories import claim

    job, batches = six_texts_in_batches_of_two(
        runtime, db, settings, monkeypatch, during_first_batch
    )
    runner = runtime.runners[Task.SENTIMENT]
    recorded = _work_on(runtime, runner, claim(db, model=settings.sentiment_model)).recorded
    return job, batches, recorded


def test_a_job_cancelled_mid_claim_keeps_the_batch_that_ran_and_skips_the_rest(
    runtime, db, settings, monkeypatch
):
    from shared.models import DEFAULT_TENANT_ID

    def cancel(job):
        with db.write() as session:
            cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)

    job, batches, _ = work_on_six_texts_in_batches_of_two(
        runtime, db, settings, monkeypatch, cancel
    )
    # The first batch's record is written while the second batch runs: the cancel is
    # learned there, one batch later, and the third batch never runs.
    assert batches == [2, 2]
    with db.read() as session:
        statuses = sorted(session.scalars(select(JobItem.status)).all())
        assert session.get(Job, job.id).status == JobStatus.CANCELLED
    assert statuses == ["cancelled"] * 2 + ["done"] * 4


def test_a_claim_gives_way_to_higher_priority_work_after_its_current_batch(
    runtime, db, settings, monkeypatch
):
    def urgent_work_arrives(job):
        make_job(db, texts=["now"], model=settings.sentiment_model, priority=9)

    bulk, batches, recorded = work_on_six_texts_in_batches_of_two(
        runtime, db, settings, monkeypatch, urgent_work_arrives
    )
    # Learned at the first record, written beside the second batch: the claim ends after it.
    assert (batches, recorded) == ([2, 2], 4)
    with db.read() as session:
        rows = session.execute(
            select(JobItem.status, JobItem.attempts).where(JobItem.job_id == bulk.id)
        ).all()
    assert sorted(rows) == [("done", 1)] * 4 + [("pending", 0)] * 2
    assert drain_queue(runtime, Task.SENTIMENT) == 3


def test_urgent_work_of_another_task_ends_the_drain_and_runs_in_its_place(
    runtime, db, settings, monkeypatch
):
    urgent = []

    def submit_a_summary(_bulk):
        summary = make_job(
            db,
            texts=["A story."],
            task=Task.SUMMARIZE,
            model=settings.summarization_model,
            priority=9,
        )
        urgent.append(summary)

    bulk, _ = six_texts_in_batches_of_two(runtime, db, settings, monkeypatch, submit_a_summary)
    # The summary shares the worker's device: the sentiment drain ends after the batch that
    # ran when it learned of it, rings for the rest of its own work, and the summary's
    # drain runs in its place (four sentiment texts and the summary).
    assert drain_queue(runtime, Task.SENTIMENT) == 5
    assert len(published(settings, Task.SENTIMENT)) == 1
    assert published(settings, Task.SUMMARIZE) == []
    rows = item_rows(db, bulk)
    assert sorted((r.status, r.attempts) for r in rows) == [("done", 1)] * 4 + [("pending", 0)] * 2
    assert drain_queue(runtime, Task.SENTIMENT) == 2
    with db.read() as session:
        urgent_end = session.get(Job, urgent[0].id).finished_at
        assert urgent_end < session.get(Job, bulk.id).finished_at


def test_the_model_runs_the_next_batch_while_the_last_ones_are_written(
    runtime, db, settings, monkeypatch
):
    import threading
    import time

    from tests.factories import claim

    job = make_job(db, texts=[f"text {n}" for n in range(6)], model=settings.sentiment_model)
    runner = runtime.runners[Task.SENTIMENT]
    runner.limits = runner.limits.__class__(max_tokens=4096, max_size=2)
    runtime.settings = settings.model_copy(update={"record_interval_s": 0.0})
    writing = threading.Event()
    overlapped = []
    record = tasks.record_outcomes

    def slow_record(session, **kwargs):
        writing.set()
        time.sleep(0.3)  # a slow database: the model should not wait for it
        stored = record(session, **kwargs)
        writing.clear()
        return stored

    forward = runner._forward

    def watched_forward(batch, encoded, tensors):
        # From the second batch on, a record is due before it: is it being written now?
        overlapped.append(bool(overlapped) and writing.wait(2))
        return forward(batch, encoded, tensors)

    monkeypatch.setattr(tasks, "record_outcomes", slow_record)
    monkeypatch.setattr(runner, "_forward", watched_forward)
    assert _work_on(runtime, runner, claim(db, model=settings.sentiment_model)).recorded == 6
    assert overlapped == [False, True, True]
    with db.read() as session:
        assert session.get(Job, job.id).status == JobStatus.SUCCEEDED


def claims_of_four(runtime, settings):
    """The runtime set to claim 4 texts at a time (2 batches of 2), and its claims."""
    runner = runtime.runners[Task.SENTIMENT]
    runner.limits = runner.limits.__class__(max_tokens=4096, max_size=2)
    runtime.settings = settings.model_copy(update={"claim_batches": 2})
    return runner, tasks._Claims(runtime)


def item_rows(db, job):
    with db.read() as session:
        return session.execute(
            select(JobItem.idx, JobItem.status, JobItem.attempts, JobItem.claim_token)
            .where(JobItem.job_id == job.id)
            .order_by(JobItem.idx)
        ).all()


def test_the_next_claim_is_taken_ahead_and_handed_back_unrun(runtime, db, settings):
    job = make_job(db, texts=[f"text {n}" for n in range(9)], model=settings.sentiment_model)
    runner, claims = claims_of_four(runtime, settings)
    first = claims.take(runner)
    assert first.claim.full and len(first.claim.items) == 4
    claims.take_ahead(runner)
    ahead = claims.ahead()
    assert ahead.claim.full and ahead.claim.token != first.claim.token
    assert ahead.ready.prepared.batches  # tokenized and planned on its thread
    running = {row.idx: row for row in item_rows(db, job) if row.status == "running"}
    assert len(running) == 8
    assert {row.claim_token for row in running.values()} == {
        first.claim.token,
        ahead.claim.token,
    }
    first.lease.stop()
    claims.close()  # the claim ahead goes back without using up an attempt
    rows = item_rows(db, job)
    assert [(r.status, r.attempts) for r in rows if r.claim_token == first.claim.token] == [
        ("running", 1)
    ] * 4
    assert (
        sorted((r.status, r.attempts) for r in rows if r.claim_token != first.claim.token)
        == [("pending", 0)] * 5
    )
    last = tasks._Claims(runtime)
    again, rest = last.take(runner), last.take(runner)
    assert again.claim.full
    assert not rest.claim.full  # the one text left: no backlog behind it
    for taken in (again, rest):
        taken.lease.stop()
    last.close()


def test_a_backlog_drains_with_claims_taken_ahead_each_text_run_once(
    runtime, db, settings, monkeypatch
):
    job = make_job(db, texts=[f"text {n}" for n in range(11)], model=settings.sentiment_model)
    claims_of_four(runtime, settings)
    taken_ahead = []
    take_ahead = tasks._Claims.take_ahead

    def counted(self, runner):
        taken_ahead.append(runner)
        take_ahead(self, runner)

    monkeypatch.setattr(tasks._Claims, "take_ahead", counted)
    assert drain_queue(runtime, Task.SENTIMENT) == 11
    assert len(taken_ahead) == 2  # behind the two full claims, not behind the last one
    rows = item_rows(db, job)
    assert [(r.status, r.attempts) for r in rows] == [("done", 1)] * 11
    assert len({r.claim_token for r in rows}) == 3
    with db.read() as session:
        assert session.get(Job, job.id).status == JobStatus.SUCCEEDED


def test_a_claim_taken_ahead_gives_way_to_higher_priority_work(runtime, db, settings):
    bulk = make_job(db, texts=[f"text {n}" for n in range(12)], model=settings.sentiment_model)
    runner, claims = claims_of_four(runtime, settings)
    first = claims.take(runner)
    claims.take_ahead(runner)
    ahead = claims.ahead()
    urgent = make_job(db, texts=["now"], model=settings.sentiment_model, priority=9)
    # The first claim learns of the urgent job at its record, and the one ahead goes back.
    assert tasks._work_on(runtime, runner, first.claim, taken=first, ahead=claims).recorded == 4
    assert claims.ahead() is None
    rows = item_rows(db, bulk)
    assert not {r.claim_token for r in rows} & {ahead.claim.token}
    assert sorted((r.status, r.attempts) for r in rows) == [("done", 1)] * 4 + [("pending", 0)] * 8
    following = claims.take(runner)
    assert {item.job_id for item in following.claim.items} == {urgent.id}
    following.lease.stop()
    claims.close()


def test_a_claim_taken_ahead_that_holds_higher_priority_work_is_kept(runtime, db, settings):
    make_job(db, texts=[f"text {n}" for n in range(12)], model=settings.sentiment_model)
    runner, claims = claims_of_four(runtime, settings)
    first = claims.take(runner)
    urgent = make_job(db, texts=["now"], model=settings.sentiment_model, priority=9)
    assert tasks._work_on(runtime, runner, first.claim, taken=first, ahead=claims).recorded == 4
    ahead = claims.ahead()  # taken after the urgent job came: it holds it
    assert {item.job_id for item in ahead.claim.items} == {urgent.id}
    claims.close()


def test_a_claim_ahead_that_found_nothing_is_looked_for_again(runtime, db, settings):
    runner, claims = claims_of_four(runtime, settings)
    make_job(db, texts=[f"text {n}" for n in range(4)], model=settings.sentiment_model)
    first = claims.take(runner)
    claims.take_ahead(runner)
    assert claims.ahead() is None  # all of the work was in the first claim
    # Work that comes meanwhile (chunks of the texts it splits, new jobs) is found next.
    later = make_job(db, texts=["later"], model=settings.sentiment_model)
    following = claims.take(runner)
    assert {item.job_id for item in following.claim.items} == {later.id}
    for taken in (first, following):
        taken.lease.stop()
    claims.close()


def test_a_lost_claims_items_are_not_taken_ahead(runtime, db, settings):
    job = make_job(db, texts=[f"text {n}" for n in range(4)], model=settings.sentiment_model)
    runner, _ = claims_of_four(runtime, settings)
    with db.write() as session:  # as the sweeper leaves the items of a lost worker's claim
        session.execute(update(JobItem).values(attempts=1))
    # While another claim runs, which may kill the worker again: left for the claim after.
    assert tasks._take(runtime, runner, ahead=True) is None
    assert [(r.status, r.attempts) for r in item_rows(db, job)] == [("pending", 1)] * 4
    with db.read() as session:
        assert session.get(Job, job.id).last_claimed_at is None  # not even claimed
    taken = tasks._take(runtime, runner)
    assert taken.claim.retried and len(taken.claim.items) == 4
    taken.lease.stop()


def test_a_claim_taken_ahead_runs_nothing_of_a_job_cancelled_meanwhile(runtime, db, settings):
    from shared.models import DEFAULT_TENANT_ID

    job = make_job(db, texts=[f"text {n}" for n in range(8)], model=settings.sentiment_model)
    runner, claims = claims_of_four(runtime, settings)
    first = claims.take(runner)
    claims.take_ahead(runner)
    ahead = claims.ahead()
    first.lease.stop()
    with db.write() as session:
        cancel_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)
    assert tasks._work_on(runtime, runner, ahead.claim, taken=ahead).recorded == 0
    rows = item_rows(db, job)
    assert "done" not in {r.status for r in rows}
    assert sorted(r.status for r in rows if r.claim_token != first.claim.token) == ["cancelled"] * 4
    claims.close()


def test_texts_with_a_deadline_are_not_taken_ahead(runtime, db, settings):
    from datetime import UTC, datetime, timedelta

    job = make_job(db, texts=[f"text {n}" for n in range(8)], model=settings.sentiment_model)
    with db.write() as session:
        session.get(Job, job.id).deadline = datetime.now(UTC) + timedelta(hours=1)
    runner, claims = claims_of_four(runtime, settings)
    first = claims.take(runner)
    assert first.claim.full and first.claim.deadlines
    with db.read() as session:
        served = session.get(Job, job.id).last_claimed_at
    # Held ahead they would count as started, and not end when the deadline passes.
    assert tasks._take(runtime, runner, ahead=True) is None
    with db.read() as session:
        assert session.get(Job, job.id).last_claimed_at == served  # not even claimed
    rows = item_rows(db, job)
    assert (
        sorted((r.status, r.attempts) for r in rows if r.claim_token != first.claim.token)
        == [("pending", 0)] * 4
    )
    first.lease.stop()
    claims.close()


def test_a_drain_answers_the_rings_waiting_for_it_so_the_next_job_rings_anew(runtime, db, settings):
    name = runtime.served_for(Task.SENTIMENT)[0].entry.name
    for _ in range(3):  # three submits: one ring waits for them all
        make_job(db, texts=["fine"], model=settings.sentiment_model)
        runtime.doorbell.ring(Task.SENTIMENT, model_name=name)
    assert len(published(settings, Task.SENTIMENT)) == 1
    assert drain_queue(runtime, Task.SENTIMENT) == 3
    runtime.doorbell.ring(Task.SENTIMENT, model_name=name)
    assert len(published(settings, Task.SENTIMENT)) == 2


def test_a_drain_that_finds_a_backlog_wakes_one_more_worker_once(runtime, db, settings):
    runner = runtime.runners[Task.SENTIMENT]
    runner.limits = runner.limits.__class__(max_tokens=4096, max_size=2)
    runtime.settings = settings.model_copy(update={"claim_batches": 1})
    make_job(db, texts=[f"text {n}" for n in range(7)], model=settings.sentiment_model)
    assert drain_queue(runtime, Task.SENTIMENT) == 7  # four claims, three of them full
    assert len(published(settings, Task.SENTIMENT)) == 1


def test_a_job_whose_ring_a_drain_held_is_run_by_that_drains_last_look(
    runtime, db, settings, monkeypatch
):
    """A job committed after the drain found no work, before it let go of its doorbell:
    its ring is skipped, so the drain must look once more."""
    name = runtime.served_for(Task.SENTIMENT)[0].entry.name
    take = tasks._Claims.take
    late: list[Job] = []

    def take_then_submit(claims, runner):
        taken = take(claims, runner)
        if taken is None and not late:  # as a submit racing the drain: commit, then ring
            late.append(make_job(db, texts=["came late"], model=settings.sentiment_model))
            runtime.doorbell.ring(Task.SENTIMENT, model_name=name)
        return taken

    monkeypatch.setattr(tasks._Claims, "take", take_then_submit)
    make_job(db, texts=["first"], model=settings.sentiment_model)
    runtime.doorbell.ring(Task.SENTIMENT, model_name=name)
    assert drain_queue(runtime, Task.SENTIMENT) == 2
    assert len(published(settings, Task.SENTIMENT)) == 1, "the late job's ring was held"
    with db.read() as session:
        assert session.get(Job, late[0].id).status == JobStatus.SUCCEEDED


def test_a_drain_stopped_by_an_error_lets_go_and_rings_for_what_it_held(
    runtime, db, settings, monkeypatch
):
    name = runtime.served_for(Task.SENTIMENT)[0].entry.name
    make_job(db, texts=["fine"], model=settings.sentiment_model)
    runtime.doorbell.ring(Task.SENTIMENT, model_name=name)

    def database_gone(*_args, **_kwargs):
        raise ConnectionError("the database went away mid-claim")

    monkeypatch.setattr(tasks, "_work_on", database_gone)
    with pytest.raises(ConnectionError):
        drain_queue(runtime, Task.SENTIMENT)
    # Rings skipped while the drain held its queue would otherwise wait for the sweeper.
    assert len(published(settings, Task.SENTIMENT)) == 2
