"""Run one long document through a fresh worker runtime and report what it cost.

    python -m tests.worker.document_cost <data_dir> <model_dir> <characters>

A process of its own per size, so its peak memory is that document's alone.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

from sqlalchemy import func, select

from shared.config import Settings
from shared.migrate import upgrade
from shared.models import JobItem
from shared.states import Task
from tests.factories import make_job
from worker.runtime import WorkerRuntime
from worker.tasks import drain_queue

BOOKS = Path(__file__).parents[1] / "data" / "long_documents"


def document(characters: int) -> str:
    text = "\n\n".join(p.read_text() for p in sorted(BOOKS.glob("*.txt")))
    while len(text) < characters:
        text += "\n\n" + text
    return text[:characters]


def main() -> None:
    data_dir, model_dir, characters = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    settings = Settings(
        data_dir=data_dir,
        summarization_model=model_dir,
        worker_tasks="summarize",
        dtype="float32",
        result_cache=False,
        drain_slice_s=3600,
    )
    upgrade(settings.resolved_database_url)
    runtime = WorkerRuntime.start(settings)
    job = make_job(runtime.db, texts=[document(characters)], task=Task.SUMMARIZE, model=model_dir)
    drain_queue(runtime, Task.SUMMARIZE)
    with runtime.db.read() as session:
        chunks, tokens = session.execute(
            select(func.count(), func.sum(JobItem.token_count)).where(
                JobItem.job_id == job.id, JobItem.parent_id.is_not(None)
            )
        ).one()
        status = session.scalar(
            select(JobItem.status).where(JobItem.job_id == job.id, JobItem.parent_id.is_(None))
        )
    runtime.stop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"status": status, "chunks": chunks, "tokens": tokens, "peak_mb": peak_mb}))


if __name__ == "__main__":
    main()
