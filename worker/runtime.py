"""What a worker process holds while it lives: settings, database, doorbell, warm models."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from shared.broker import Doorbell, create_celery
from shared.config import Settings
from shared.db import Database
from shared.jobs.after_commit import use_doorbell
from shared.metrics import MODEL_LOAD_SECONDS
from shared.states import Task
from worker import model_registry
from worker.cache import ResultCache
from worker.categories import CategoryEncoder
from worker.engine import BatchLimits, Runner, make_runner

log = logging.getLogger(__name__)

# Set when the worker starts a warm shutdown; a drain stops after the batch it is running.
SHUTTING_DOWN = threading.Event()


def worker_tasks(settings: Settings) -> list[Task]:
    """Return the tasks this worker serves (TEXTQ_WORKER_TASKS)."""
    return [Task.parse(name.strip()) for name in settings.worker_tasks.split(",") if name.strip()]


def worker_name(settings: Settings) -> str:
    """Return a name that says where the worker runs, e.g. `textq-worker-cuda0@host`."""
    device = settings.device.replace(":", "")
    return f"textq-worker-{device}@{socket.gethostname()}"


@dataclass
class WorkerRuntime:
    """A worker's warm state; built once per process, used by every task it runs."""

    settings: Settings
    db: Database
    doorbell: Doorbell
    name: str
    runners: dict[Task, Runner] = field(default_factory=dict)
    caches: dict[Task, ResultCache] = field(default_factory=dict)

    @classmethod
    def start(
        cls, settings: Settings, resolved: dict[Task, model_registry.ResolvedModel] | None = None
    ) -> WorkerRuntime:
        """Connect to the database and broker and load every served model onto the device."""
        name = f"{worker_name(settings)}:{os.getpid()}"
        db = Database(
            settings.resolved_database_url,
            application_name=f"textq-worker-{settings.device.replace(':', '')}",
        )
        runtime = cls(
            settings=settings,
            db=db,
            doorbell=Doorbell(create_celery(settings), settings),
            name=name,
        )
        use_doorbell(db.session_info, runtime.doorbell)  # work its commits make rings
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        device = model_registry.pick_device(settings.device)
        dtype = model_registry.pick_dtype(settings.dtype, device)
        # Loaded only when a job with categories comes (see worker/categories.py). It is
        # small (MiniLM: 22 M parameters), so full precision costs little and keeps near-tied
        # categories from flipping under the classifier's half precision.
        encoder = CategoryEncoder(
            settings, device=device, dtype=model_registry.pick_dtype("float32", device)
        )
        for task in worker_tasks(settings):
            found = (resolved or {}).get(task) or model_registry.resolve(settings, task)
            loaded = model_registry.load(found, device=device, dtype=dtype)
            MODEL_LOAD_SECONDS.labels(task=task.value, model=found.source).set(loaded.load_s)
            limits = BatchLimits(
                max_tokens=settings.max_batch_tokens,
                max_size=(
                    settings.summarize_max_batch_size
                    if task is Task.SUMMARIZE
                    else settings.max_batch_size
                ),
                overhead_tokens=settings.batch_overhead_tokens,
                max_item_tokens=settings.max_item_tokens,
            )
            runtime.runners[task] = make_runner(loaded, limits, encoder=encoder)
            runtime.caches[task] = ResultCache(
                db, loaded, enabled=settings.result_cache, encoder=encoder
            )
        return runtime

    def stop(self) -> None:
        self.db.dispose()


_current: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> None:
    global _current
    _current = runtime


def current() -> WorkerRuntime:
    """Return this process's runtime (built when the worker started)."""
    if _current is None:
        raise RuntimeError("the worker runtime was not started in this process")
    return _current
