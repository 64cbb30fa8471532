"""A text split into chunks: chunks are claimed like texts, then the text moves on."""

import itertools
import threading

from sqlalchemy import select, update

from shared.jobs.outcomes import record_outcomes
from shared.jobs.reads import list_first_round_chunks, list_item_outcomes
from shared.jobs.work import Claim, NewChunk, Outcome
from shared.models import Job, JobItem, WebhookEvent
from shared.states import ItemStatus, JobStatus, Task
from tests.factories import claim, make_job


def record(db, claimed, outcomes):
    with db.write() as session:
        return record_outcomes(session, claim_token=claimed.token, outcomes=outcomes)


def split_in(text, count):
    size = len(text) // count
    bounds = [n * size for n in range(count)] + [len(text)]
    return [NewChunk(a, b, (b - a) // 4, text[a:b]) for a, b in itertools.pairwise(bounds)]


def item(db, item_id):
    with db.read() as session:
        return session.get(JobItem, item_id)


def job_of(db, job_id):
    with db.read() as session:
        return session.get(Job, job_id)


def test_a_split_text_waits_and_its_chunks_are_claimed_like_texts(db):
    document = "One sentence. " * 40
    job = make_job(db, texts=[document], task=Task.SUMMARIZE)
    first = claim(db, task=Task.SUMMARIZE)
    text = first.items[0]
    assert record(db, first, [Outcome(text.id, chunks=split_in(document, 3))]) == 1

    assert item(db, text.id).status == ItemStatus.WAITING
    chunks = claim(db, task=Task.SUMMARIZE).items
    assert [c.text for c in chunks] == [p.text for p in split_in(document, 3)]
    assert all(c.parent_id == text.id and c.level == 0 and c.is_chunk for c in chunks)
    progress = job_of(db, job.id)
    assert (progress.total_parts, progress.done_parts, progress.status) == (3, 0, "running")


def _claimed(db, claimed_item):
    """Return the claim that holds `claimed_item` (tests claim through the factory)."""
    token = item(db, claimed_item.id).claim_token
    return Claim(token=token, items=[claimed_item])


def test_summaries_of_all_chunks_become_the_next_round_then_the_result(db):
    document = "A line of text. " * 30
    job = make_job(db, texts=[document], task=Task.SUMMARIZE)
    first = claim(db, task=Task.SUMMARIZE)
    record(db, first, [Outcome(first.items[0].id, chunks=split_in(document, 2))])
    chunks = claim(db, task=Task.SUMMARIZE)
    record(db, chunks, [Outcome(chunks.items[0].id, result={"summary_text": "first half."})])
    assert item(db, first.items[0].id).status == ItemStatus.WAITING
    assert job_of(db, job.id).done_parts == 1
    record(db, chunks, [Outcome(chunks.items[1].id, result={"summary_text": "second half."})])

    again = claim(db, task=Task.SUMMARIZE).items
    assert [(i.id, i.level, i.text, i.is_chunk) for i in again] == [
        (first.items[0].id, 1, "first half.\nsecond half.", False)
    ]
    reduced = _claimed(db, again[0])
    record(db, reduced, [Outcome(again[0].id, result={"summary_text": "the whole."})])
    finished = job_of(db, job.id)
    assert finished.status == JobStatus.SUCCEEDED
    assert (finished.done_items, finished.total_parts, finished.done_parts) == (1, 2, 2)
    with db.read() as session:
        outcomes = list_item_outcomes(session, job_id=job.id, after_index=-1, limit=9)
        spans = list_first_round_chunks(session, [first.items[0].id])
    assert [o.result for o in outcomes] == [{"summary_text": "the whole."}]
    assert [(c.start, c.end) for c in spans] == [(0, 240), (240, 480)]


def test_a_long_texts_label_is_its_chunks_labels_weighted_by_tokens(db):
    document = "x" * 400
    job = make_job(db, texts=[document, "short"])
    first = claim(db)
    parts = [NewChunk(0, 300, 300, document[:300]), NewChunk(300, 400, 100, document[300:])]
    record(db, first, [Outcome(first.items[0].id, chunks=parts)])
    record(db, first, [Outcome(first.items[1].id, result=_label(0.9))])
    chunks = claim(db)
    record(db, chunks, [Outcome(chunks.items[0].id, result=_label(0.2))])
    record(db, chunks, [Outcome(chunks.items[1].id, result=_label(0.8))])

    finished = job_of(db, job.id)
    assert finished.status == JobStatus.SUCCEEDED
    assert finished.label_counts == {"NEGATIVE": 1, "POSITIVE": 1}
    result = item(db, first.items[0].id).result
    assert result["label"] == "NEGATIVE"
    assert abs(result["scores"]["POSITIVE"] - (0.2 * 300 + 0.8 * 100) / 400) < 1e-9


def _label(positive):
    label = "POSITIVE" if positive >= 0.5 else "NEGATIVE"
    return {
        "label": label,
        "score": max(positive, 1 - positive),
        "scores": {"POSITIVE": positive, "NEGATIVE": 1 - positive},
    }


def test_a_failed_chunk_fails_its_text_with_where_it_was(db):
    document = "y" * 400
    job = make_job(db, texts=[document])
    first = claim(db)
    record(db, first, [Outcome(first.items[0].id, chunks=split_in(document, 2))])
    chunks = claim(db)
    record(
        db,
        chunks,
        [
            Outcome(chunks.items[0].id, result=_label(0.9)),
            Outcome(chunks.items[1].id, error="boom"),
        ],
    )
    finished = job_of(db, job.id)
    assert finished.status == JobStatus.FAILED
    assert item(db, first.items[0].id).error == (
        "chunk index 1 (of 2 chunks; characters 200-400) failed: boom"
    ), "named by the index the results' chunks have"


def test_the_last_chunks_finishing_at_once_advance_their_text_exactly_once(db):
    document = "z" * 800
    job = make_job(db, texts=[document], task=Task.SUMMARIZE)
    first = claim(db, task=Task.SUMMARIZE)
    record(db, first, [Outcome(first.items[0].id, chunks=split_in(document, 8))])
    claims = [claim(db, task=Task.SUMMARIZE, max_items=1) for _ in range(8)]
    barrier = threading.Barrier(8)

    def finish(held):
        barrier.wait()
        record(db, held, [Outcome(held.items[0].id, result={"summary_text": "s."})])

    threads = [threading.Thread(target=finish, args=(held,)) for held in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = item(db, first.items[0].id)
    assert (text.status, text.level, text.open_parts) == (ItemStatus.PENDING, 1, None)
    assert text.work_text == "\n".join(["s."] * 8)
    assert job_of(db, job.id).done_parts == 8
    with db.read() as session:
        pending = session.scalars(
            select(JobItem.id).where(JobItem.status == ItemStatus.PENDING.value)
        ).all()
    assert pending == [text.id]


def test_one_record_counts_and_ends_each_of_many_jobs_by_its_own_outcomes(db):
    hook = "http://127.0.0.1:9/hook"
    good, bad, mixed, shared = (make_job(db, texts=[f"one {n}"]) for n in range(4))
    many = make_job(db, texts=["a", "b", "c"])
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_([bad.id, many.id]))
            .values(webhook_url=hook, webhook_events=["progress", "completed", "failed"])
        )
        # A job that already holds counts from an earlier record keeps them.
        session.execute(update(Job).where(Job.id == shared.id).values(label_counts={"NEG": 4}))
    held = claim(db)
    by_text = {i.text: i for i in held.items}
    label = {"label": "POS", "score": 0.9}
    outcomes = [
        Outcome(by_text["one 0"].id, result=label),
        Outcome(by_text["one 1"].id, error="boom"),
        Outcome(by_text["one 2"].id, result={"label": "NEG", "score": 0.8}),
        Outcome(by_text["one 3"].id, result=label),
        Outcome(by_text["a"].id, result=label),
        Outcome(by_text["b"].id, result={"label": "NEG", "score": 0.7}),
    ]
    assert record(db, held, outcomes) == 6

    def state(job):
        row = job_of(db, job.id)
        return row.status, row.done_items, row.error_items, row.label_counts

    assert state(good) == (JobStatus.SUCCEEDED, 1, 0, {"POS": 1})
    assert state(bad) == (JobStatus.FAILED, 0, 1, {})
    assert state(mixed) == (JobStatus.SUCCEEDED, 1, 0, {"NEG": 1})
    assert state(shared) == (JobStatus.SUCCEEDED, 1, 0, {"NEG": 4, "POS": 1})
    assert state(many) == (JobStatus.RUNNING, 2, 0, {"NEG": 1, "POS": 1})
    assert all(job_of(db, j.id).finished_at is not None for j in (good, bad, mixed, shared))
    assert record(db, held, [Outcome(by_text["c"].id, result=label)]) == 1
    assert state(many) == (JobStatus.SUCCEEDED, 3, 0, {"NEG": 1, "POS": 2})
    with db.read() as session:
        events = session.execute(
            select(WebhookEvent.job_id, WebhookEvent.type).order_by(WebhookEvent.created_at)
        ).all()
    # Each job's own events: the failure, and the 3-text job's progress then its end.
    assert sorted((job_id, kind) for job_id, kind in events) == sorted(
        [(bad.id, "job.failed"), (many.id, "job.progress"), (many.id, "job.completed")]
    )
