"""Retention: finished jobs' data is purged after their tenant's period; jobs can be deleted."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shared.errors import InvalidRequest, JobNotFound
from shared.jobs import retention
from shared.jobs.cancel import delete_job
from shared.jobs.outcomes import record_outcomes
from shared.jobs.work import Outcome
from shared.models import DEFAULT_TENANT_ID, Job, JobItem, Tenant, utcnow
from shared.states import JobStatus
from tests.factories import claim, make_job
from worker.sweeper import purge_expired_jobs


def finished(db, texts, *, days_ago, tenant_id=DEFAULT_TENANT_ID):
    job = make_job(db, texts=texts, tenant_id=tenant_id)
    held = claim(db)
    with db.write() as session:
        record_outcomes(
            session,
            claim_token=held.token,
            outcomes=[Outcome(i.id, result={"label": "POSITIVE"}) for i in held.items],
        )
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(finished_at=utcnow() - timedelta(days=days_ago))
        )
    return job


def state(db, job_id):
    with db.read() as session:
        job = session.get(Job, job_id)
        items = session.scalar(select(func.count()).where(JobItem.job_id == job_id))
    return (job.status if job else None), items


def test_a_job_past_retention_keeps_its_status_and_loses_its_data(db, monkeypatch):
    monkeypatch.setattr(retention, "PURGE_SLICE_ROWS", 2)  # several slices
    old = finished(db, ["a", "b", "c", "d", "e"], days_ago=31)
    recent = finished(db, ["f"], days_ago=29)
    running = make_job(db, texts=["g"])
    assert purge_expired_jobs(db, default_days=30) == 1
    assert state(db, old.id) == (JobStatus.EXPIRED, 0)
    assert state(db, recent.id) == (JobStatus.SUCCEEDED, 1)
    assert state(db, running.id) == (JobStatus.QUEUED, 1)
    with db.read() as session:
        expired = session.get(Job, old.id)
    assert (expired.total_items, expired.done_items) == (5, 5)


def test_a_tenant_may_keep_its_data_longer_or_forever(db):
    with db.write() as session:
        session.add(Tenant(id="keeper", name="keeps", retention_days=0))
        session.add(Tenant(id="brief", name="brief", retention_days=1))
    kept = finished(db, ["a"], days_ago=400, tenant_id="keeper")
    brief = finished(db, ["b"], days_ago=2, tenant_id="brief")
    assert purge_expired_jobs(db, default_days=30) == 1
    assert state(db, kept.id)[0] == JobStatus.SUCCEEDED
    assert state(db, brief.id)[0] == JobStatus.EXPIRED


def test_deleting_a_job_removes_it_and_everything_of_it(db):
    job = finished(db, ["a", "b"], days_ago=0)
    with db.write() as session:
        delete_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)
    assert state(db, job.id) == (None, 0)
    with db.write() as session, pytest.raises(JobNotFound):
        delete_job(session, tenant_id=DEFAULT_TENANT_ID, job_id=job.id)


def test_a_job_s_own_expiry_purges_it_before_retention(db):
    soon = finished(db, ["a"], days_ago=0)
    later = finished(db, ["b"], days_ago=0)
    plain = finished(db, ["c"], days_ago=0)
    with db.write() as session:
        for job, seconds, ended_ago_s in ((soon, 60, 61), (later, 60, 30)):
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(
                    expires_after_s=seconds,
                    finished_at=utcnow() - timedelta(seconds=ended_ago_s),
                )
            )
    assert purge_expired_jobs(db, default_days=30) == 1
    assert state(db, soon.id) == (JobStatus.EXPIRED, 0)
    assert state(db, later.id) == (JobStatus.SUCCEEDED, 1)
    assert state(db, plain.id) == (JobStatus.SUCCEEDED, 1)
    # Tenant retention still applies to a job with a long expiry of its own.
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == later.id)
            .values(expires_after_s=40 * 86400, finished_at=utcnow() - timedelta(days=31))
        )
    assert purge_expired_jobs(db, default_days=30) == 1
    assert state(db, later.id) == (JobStatus.EXPIRED, 0)


def test_an_expiry_past_the_tenant_s_retention_is_refused_naming_the_most(db):
    with db.write() as session:
        session.add(Tenant(id="brief-expiry", name="brief-expiry", retention_days=1))
        session.add(Tenant(id="keeper-expiry", name="keeps", retention_days=0))
    with db.write() as session, pytest.raises(InvalidRequest, match="the most is 86400"):
        retention.check_expiry_within_retention(
            session, tenant_id="brief-expiry", expires_after_s=86401, default_days=30
        )
    with db.write() as session:
        retention.check_expiry_within_retention(
            session, tenant_id="keeper-expiry", expires_after_s=10**9, default_days=30
        )
        retention.check_expiry_within_retention(
            session, tenant_id="brief-expiry", expires_after_s=86400, default_days=30
        )


class Quiet:
    def ring(self, task, *, model_name=None, job_id=None):
        return True


def test_every_sweep_purges_jobs_past_their_own_expiry_not_only_the_hourly_one(db, settings):
    from worker.sweeper import Sweeper

    settings = settings.model_copy(update={"retention_sweep_interval_s": 3600})
    sweeper = Sweeper(settings=settings, db=db, doorbell=Quiet(), served={})
    sweeper.sweep()  # the hourly retention sweep runs now, then not for an hour
    job = finished(db, ["short-lived"], days_ago=0)
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(expires_after_s=1, finished_at=utcnow() - timedelta(seconds=2))
        )
    sweeper.sweep()
    assert state(db, job.id) == (JobStatus.EXPIRED, 0)
