"""Submitting jobs and presenting them: the steps both the v1 and the classic routes share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, SettingsDep, TenantDep
from api.idempotency import TTL_S, Idempotency
from shared import worker_registry
from shared.catalogue import CatalogueModel
from shared.config import Settings
from shared.db import Database
from shared.errors import InvalidRequest, JobNotFound, TooManyActiveJobs
from shared.jobs.after_commit import run_after_commit, wake_workers
from shared.jobs.insights import Summarizer
from shared.jobs.presenting import present_job
from shared.jobs.reads import text_previews
from shared.jobs.retention import check_expiry_within_retention
from shared.jobs.submit import (
    PREVIEW_CHARS,
    Webhook,
    attach_idempotency_key,
    count_active_jobs,
    create_job,
    lock_tenant_submissions,
    reserve_idempotency_key,
)
from shared.logs import bind
from shared.metrics import JOBS_SUBMITTED
from shared.model_limits import unfit_options
from shared.models import Job
from shared.schemas import SYNC_PRIORITY, JobRead, WebhookSettings
from shared.states import Task
from shared.webhooks.targets import allowed_networks, safe_addresses

# When a tenant at its limit of unfinished jobs may try again: a small job takes seconds.
ACTIVE_JOBS_RETRY_AFTER_S = 10


@dataclass(frozen=True)
class Submitter:
    """Submits jobs for the calling tenant."""

    db: Database
    settings: Settings
    tenant_id: str

    def submit(
        self,
        task: Task,
        texts: list[str],
        options: dict[str, Any],
        *,
        kind: str = "texts",
        deadline: datetime | None = None,
        idempotency: Idempotency | None = None,
        webhook: Webhook | None = None,
        priority: int = SYNC_PRIORITY,
        options_at: str = "options.",
        expires_after_s: int | None = None,
        model_name: str | None = None,
    ) -> Submitted:
        """Store a job and its items in one transaction; its commit rings the task's doorbell.

        `model_name` is the catalogue model asked for (None: the task's default); a name the
        task does not have is a 422 listing those it has.

        With an idempotency key already used for the same request, return that job instead.
        `options_at` is where the request put the options, for the fields of a 422 naming
        one the model cannot honour (the classic endpoints take them at the top level).
        """

        chosen = choose_model(self.settings, task, model_name)

        def create(session: Session) -> Job:
            return create_job(
                session,
                tenant_id=self.tenant_id,
                task=task,
                model=chosen.source,
                model_name=chosen.name,
                options=options,
                texts=texts,
                input_kind=kind,
                webhook=webhook,
                priority=priority,
                summarizer=summarizer_of_insights(self.settings),
                expires_after_s=expires_after_s,
                deadline=deadline,
            )

        # The texts are in memory: creating the job costs less than checking twice.
        return self.submit_with(task, create, idempotency, options_at=options_at, precheck=False)

    def submit_with(
        self,
        task: Task,
        create: Callable[[Session], Job],
        idempotency: Idempotency | None,
        *,
        options_at: str = "options.",
        precheck: bool = True,
    ) -> Submitted:
        """Run `create` in a write transaction (once per idempotency key); its commit rings.

        A job whose options its model cannot honour (as its live workers recorded the
        model's limits) is refused with a 422 and nothing is written. With `precheck`, the
        tenant's limit of active jobs is also checked before `create` runs, which spares
        the work of a big upload that would be refused anyway.
        """
        with self.db.write() as session:
            if idempotency is not None:
                earlier = reserve_idempotency_key(
                    session,
                    tenant_id=self.tenant_id,
                    key=idempotency.key,
                    request_hash=idempotency.request_hash,
                    ttl_s=TTL_S,
                )
                if earlier is not None:
                    return Submitted(
                        job=earlier, created=False, previews=read_previews(session, [earlier])
                    )
            if precheck:
                # Before the work of a big upload, refuse at once what the check below would.
                self._check_active_jobs(session, counting_new_job=False)
            job = create(session)
            if job.expires_after_s is not None:
                check_expiry_within_retention(
                    session,
                    tenant_id=self.tenant_id,
                    expires_after_s=job.expires_after_s,
                    default_days=self.settings.retention_days,
                )
            self._check_options_fit_model(session, job, options_at=options_at)
            self._check_active_jobs(session, counting_new_job=True)
            if idempotency is not None:
                attach_idempotency_key(
                    session, tenant_id=self.tenant_id, key=idempotency.key, job=job
                )
            wake_workers(session, task, model_name=job.model_name, job_id=job.id)
            counted = JOBS_SUBMITTED.labels(task=task.value, input_kind=job.input_kind)
            run_after_commit(session, counted.inc)
            previews = read_previews(session, [job])
        bind(job_id=str(job.id))
        return Submitted(job=job, created=True, previews=previews)

    def _check_options_fit_model(self, session: Session, job: Job, *, options_at: str) -> None:
        """Raise InvalidRequest naming each option the job's model cannot honour.

        While no live worker has recorded the model's limits, the job goes through and its
        worker refuses such options with the same words.
        """
        if not job.options:
            return
        limits = worker_registry.limits_of_live_workers(
            session,
            task=job.task,
            model=job.model,
            sweep_interval_s=self.settings.sweep_interval_s,
        )
        problems = unfit_options(job.options, limits) if limits is not None else {}
        if problems:
            errors = [{"field": options_at + name, "message": m} for name, m in problems.items()]
            raise InvalidRequest(
                "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
            )

    def _check_active_jobs(self, session: Session, *, counting_new_job: bool) -> None:
        """Raise TooManyActiveJobs if the tenant is over its limit of unfinished jobs.

        Counting the new job, the check holds the tenant's lock until commit, so that of
        two submissions racing for the last place one sees the other's job.
        """
        limit = self.settings.max_active_jobs_per_tenant
        if limit == 0:
            return
        if counting_new_job:
            lock_tenant_submissions(session, tenant_id=self.tenant_id)
        active = count_active_jobs(session, tenant_id=self.tenant_id)
        others = active - 1 if counting_new_job else active
        if others >= limit:
            raise TooManyActiveJobs(
                limit=limit, active=others, retry_after_s=ACTIVE_JOBS_RETRY_AFTER_S
            )


@dataclass(frozen=True)
class Submitted:
    """The job a submit stored, or (`created` false) the one its idempotency key found,
    with the start of its first text (`previews`, by job id) for `present`."""

    job: Job
    created: bool
    previews: Mapping[uuid.UUID, str]


def choose_model(settings: Settings, task: Task, name: str | None) -> CatalogueModel:
    """Return the catalogue model a job asks for by name (None: the task's default).

    Raises InvalidRequest (422) naming the field `model` and the task's models.
    """
    try:
        return settings.catalogue.choose(task, name)
    except LookupError as error:
        raise InvalidRequest(
            f"model: {error}", errors=[{"field": "model", "message": str(error)}]
        ) from None


def summarizer_of_insights(settings: Settings) -> Summarizer:
    """Return what summarizes the negative feedback of jobs submitted with insights: the
    default summarize model of the catalogue."""
    chosen = settings.catalogue.default(Task.SUMMARIZE)
    if chosen is None:  # a models file without summarizers: the setting, unnamed
        return Summarizer(
            model=settings.model_for(Task.SUMMARIZE), max_chars=settings.insight_max_chars
        )
    return Summarizer(model=chosen.source, max_chars=settings.insight_max_chars, name=chosen.name)


async def get_submitter(db: DatabaseDep, settings: SettingsDep, tenant_id: TenantDep) -> Submitter:
    """Return the request's submitter (async: it only builds an object, see api/deps.py)."""
    return Submitter(db=db, settings=settings, tenant_id=tenant_id)


SubmitterDep = Annotated[Submitter, Depends(get_submitter)]


def parse_job_id(raw: str) -> uuid.UUID:
    """Return the job id in a path, treating a malformed one as unknown."""
    try:
        job_id = uuid.UUID(raw)
    except ValueError:
        raise JobNotFound(f"No job with id {raw!r}.") from None
    bind(job_id=str(job_id))
    return job_id


def read_previews(session: Session, jobs: Sequence[Job]) -> dict[uuid.UUID, str]:
    """Return the first `PREVIEW_CHARS` characters of each job's first text, by job id
    (none for a job whose first text is empty, as a refused upload row's is).

    Jobs that keep their preview (`input.preview`, written with the job) are not read:
    only uploads and jobs made before previews were kept cost a query.
    """
    unknown = [job.id for job in jobs if "preview" not in (job.input_meta or {})]
    return text_previews(session, unknown, chars=PREVIEW_CHARS) if unknown else {}


def present(job: Job, request: Request, previews: Mapping[uuid.UUID, str]) -> JobRead:
    """Return the job as clients see it: links to itself and its results, and the start of
    its first text as `input.preview` where `previews` (from `read_previews`) has one.

    Every API answer about a job comes from here, so that one job has one shape whether it
    was just submitted, read, listed or cancelled.
    """
    read = present_job(job, str(request.base_url).rstrip("/"))
    if (preview := previews.get(job.id)) is not None:
        read.input["preview"] = preview
    return read


def checked_webhook(webhook: WebhookSettings | None, settings: Settings) -> Webhook | None:
    """Return the job's webhook once its URL is known to be safe to send to, or raise 422."""
    if webhook is None:
        return None
    safe_addresses(webhook.url, allowed=allowed_networks(settings))
    return Webhook(url=webhook.url, events=list(dict.fromkeys(webhook.events)))
