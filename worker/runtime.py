"""What a worker process holds while it lives: settings, database, doorbell, the models it
serves (loaded at start or on first work)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from shared import worker_registry
from shared.broker import Doorbell, create_celery
from shared.catalogue import CatalogueModel
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


def served_models(settings: Settings) -> list[CatalogueModel]:
    """Return the catalogue models this worker serves: TEXTQ_WORKER_MODELS (`--models`), or
    every model of its tasks. Raises LookupError naming a model it cannot serve."""
    wanted = [name.strip() for name in settings.worker_models.split(",") if name.strip()]
    return settings.catalogue.served_by_worker(worker_tasks(settings), wanted)


def worker_name(settings: Settings) -> str:
    """Return a name that says where the worker runs, e.g. `textq-worker-cuda0@host`."""
    device = settings.device.replace(":", "")
    return f"textq-worker-{device}@{socket.gethostname()}"


@dataclass
class ServedModel:
    """One catalogue model a worker serves: its files, and once loaded its runner and cache."""

    entry: CatalogueModel
    resolved: model_registry.ResolvedModel
    runner: Runner | None = None
    cache: ResultCache | None = None
    # Why it could not be loaded, if it could not: its jobs wait for another worker.
    broken: str | None = None

    def registry_entry(self) -> dict[str, Any]:
        """Return what the `workers` table's `served` list says of this model."""
        loaded = self.runner.loaded if self.runner is not None else None
        return {
            "name": self.entry.name,
            "task": self.entry.task.value,
            "model": self.resolved.source,
            "revision": self.resolved.revision,
            "default": self.entry.default,
            "loaded": loaded is not None,
            "error": self.broken,
            "limits": loaded.limits.as_json() if loaded is not None else None,
            "labels": loaded.labels() if loaded is not None else None,
        }


@dataclass
class WorkerRuntime:
    """A worker's warm state; built once per process, used by every task it runs.

    `served` holds every catalogue model the worker serves, by name; each task's default
    model is loaded at start (start-up checks and the limits the API checks options
    against rely on it), the others on the first work for them. `runners` are the loaded
    task defaults, by task.
    """

    settings: Settings
    db: Database
    doorbell: Doorbell
    name: str
    device: Any = None
    dtype: Any = None
    encoder: CategoryEncoder | None = None
    runners: dict[Task, Runner] = field(default_factory=dict)
    served: dict[str, ServedModel] = field(default_factory=dict)
    _loading: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(
        cls,
        settings: Settings,
        resolved: dict[Task, model_registry.ResolvedModel]
        | dict[str, model_registry.ResolvedModel]
        | None = None,
    ) -> WorkerRuntime:
        """Connect to the database and broker, find every served model's files, and load
        each task's default onto the device (`resolved`: files found already, by name or
        task)."""
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
        runtime.device = model_registry.pick_device(settings.device)
        runtime.dtype = model_registry.pick_dtype(settings.dtype, runtime.device)
        # Loaded only when a job with categories comes (see worker/categories.py). It is
        # small (MiniLM: 22 M parameters), so full precision costs little and keeps near-tied
        # categories from flipping under the classifier's half precision.
        runtime.encoder = CategoryEncoder(
            settings,
            device=runtime.device,
            dtype=model_registry.pick_dtype("float32", runtime.device),
        )
        found: dict[Any, model_registry.ResolvedModel] = dict(resolved or {})
        for entry in served_models(settings):
            files = found.get(entry.name)
            if files is None and entry.default:
                files = found.get(entry.task)
            files = files or model_registry.resolve_entry(settings, entry)
            runtime.served[entry.name] = ServedModel(entry=entry, resolved=files)
        for served in runtime.served.values():
            if served.entry.default:
                runtime.load(served)
        return runtime

    def tasks(self) -> list[Task]:
        """Return the tasks of the served models, in the order they were asked for."""
        return list(dict.fromkeys(served.entry.task for served in self.served.values()))

    def queues(self) -> list[str]:
        """Return the broker queues this worker takes doorbells from: each served model's,
        and its tasks' own (rung for jobs from before the catalogue)."""
        tasks = [self.settings.queue_for(task) for task in self.tasks()]
        models = [
            self.settings.queue_for(served.entry.task, served.entry.name)
            for served in self.served.values()
        ]
        return tasks + models

    def served_for(self, task: Task) -> list[ServedModel]:
        return [served for served in self.served.values() if served.entry.task is task]

    def load(self, served: ServedModel) -> Runner:
        """Return the model's runner, loading the model onto the device the first time."""
        with self._loading:
            if served.runner is not None:
                return served.runner
            task = served.entry.task
            loaded = model_registry.load(served.resolved, device=self.device, dtype=self.dtype)
            MODEL_LOAD_SECONDS.labels(task=task.value, model=served.resolved.source).set(
                loaded.load_s
            )
            limits = BatchLimits(
                max_tokens=self.settings.max_batch_tokens,
                max_size=(
                    self.settings.summarize_max_batch_size
                    if task is Task.SUMMARIZE
                    else self.settings.max_batch_size
                ),
                overhead_tokens=self.settings.batch_overhead_tokens,
                max_item_tokens=self.settings.max_item_tokens,
            )
            served.runner = make_runner(loaded, limits, encoder=self.encoder)
            served.cache = ResultCache(
                self.db, loaded, enabled=self.settings.result_cache, encoder=self.encoder
            )
            if served.entry.default:
                self.runners[task] = served.runner
            return served.runner

    @property
    def caches(self) -> dict[str, ResultCache]:
        """Return the result cache of each loaded model, by catalogue name."""
        return {name: m.cache for name, m in self.served.items() if m.cache is not None}

    def cache_of(self, runner: Runner) -> ResultCache:
        """Return the result cache of a loaded model's runner."""
        for served in self.served.values():
            if served.runner is runner and served.cache is not None:
                return served.cache
        raise LookupError(f"no served model runs on {runner.loaded.resolved.source!r}")

    def list_in_registry(self) -> None:
        """List this worker in the `workers` table with what it serves and has loaded
        (`textq models list`, `GET /v1/models`; the API checks options against the limits)."""
        loaded = [served.runner.loaded for served in self.served.values() if served.runner]
        with self.db.write() as session:
            worker_registry.register_worker(
                session,
                name=self.name,
                device=str(self.device),
                dtype=str(self.dtype).removeprefix("torch."),
                # The task defaults, as workers before the catalogue listed them.
                models={
                    m.resolved.task.value: m.registry_entry()
                    for m in loaded
                    if m.resolved.name is None or self.served[m.resolved.name].entry.default
                },
                served=[served.registry_entry() for served in self.served.values()],
            )

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
