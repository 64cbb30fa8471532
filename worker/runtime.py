"""What a worker process holds while it lives: settings, database, doorbell, the models it
serves (loaded at start or on first work)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared import worker_registry
from shared.broker import Doorbell, create_celery
from shared.catalogue import CatalogueModel
from shared.config import Settings
from shared.db import Database
from shared.jobs.after_commit import use_doorbell
from shared.metrics import (
    MODEL_EVICTIONS,
    MODEL_LOAD_SECONDS,
    MODEL_LOADS,
    MODELS_LOADED_BYTES,
)
from shared.model_limits import ModelLimits
from shared.states import Task
from worker import model_registry
from worker.cache import ResultCache
from worker.categories import CategoryEncoder
from worker.engine import BatchLimits, Runner, make_runner
from worker.memory import release_model_memory
from worker.model_budget import (
    MemoryBudget,
    ModelTooLarge,
    describe_bytes,
    expected_bytes,
    resident_bytes,
)

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


def celery_node_name(settings: Settings) -> str:
    """Return this process's Celery node name, e.g. `textq-worker-cuda0-4242@host`.

    The pid keeps it unique where two workers share a host and a device name: Celery's
    control commands answer, and are addressed, by node name.
    """
    name, _, host = worker_name(settings).partition("@")
    return f"{name}-{os.getpid()}@{host}"


@dataclass
class ServedModel:
    """One catalogue model a worker serves: its files, and once loaded its runner and cache."""

    entry: CatalogueModel
    resolved: model_registry.ResolvedModel
    runner: Runner | None = None
    cache: ResultCache | None = None
    # Why it could not be loaded, if it could not: its jobs wait for another worker.
    broken: str | None = None
    # Learned at the first load and kept through evictions: the API checks a job's options
    # against the limits whether or not the model is loaded at the moment.
    limits: ModelLimits | None = None
    labels: list[str] | None = None
    size_bytes: int | None = None

    def registry_entry(self) -> dict[str, Any]:
        """Return what the `workers` table's `served` list says of this model."""
        return {
            "name": self.entry.name,
            "task": self.entry.task.value,
            "model": self.resolved.source,
            "revision": self.resolved.revision,
            "default": self.entry.default,
            "loaded": self.runner is not None,
            "error": self.broken,
            "limits": self.limits.as_json() if self.limits is not None else None,
            "labels": self.labels,
        }


@dataclass
class WorkerRuntime:
    """A worker's warm state; built once per process, used by every task it runs.

    `served` holds every catalogue model the worker serves, by name; each task's default
    model is loaded at start (start-up checks and the limits the API checks options
    against rely on it), the others on the first work for them. Under a memory budget
    (TEXTQ_WORKER_MEMORY_GB) a load first evicts the least recently used models not in use,
    defaults too. `runners` are the loaded task defaults, by task.
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
    budget: MemoryBudget = field(default_factory=lambda: MemoryBudget(None))
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
            budget=MemoryBudget.from_gb(settings.worker_memory_gb),
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
            # Exported at 0 from the start, so a query sees a model with no evictions yet
            # rather than no series at all.
            MODEL_EVICTIONS.labels(model=entry.name)
        for served in runtime.served.values():
            if served.entry.default:
                try:
                    runtime.load(served)
                except ModelTooLarge as error:  # the worker still serves its other models
                    served.broken = str(error)
                    log.error(str(error), extra={"action": "model_refused"})
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
        """Return the model's runner, loading the model onto the device if it is not loaded,
        after evicting what must go to keep under the memory budget.

        Raises ModelTooLarge when the model alone is larger than the whole budget, and
        ModelUnavailable when it cannot be loaded at all.
        """
        with self._loading:
            if served.runner is not None:
                return served.runner
            name, task = served.entry.name, served.entry.task
            if self.budget.limit_bytes is not None:
                # Known from an earlier load, else read from the weights' headers.
                need = served.size_bytes or expected_bytes(served.resolved.path, self.dtype)
                self.budget.refuse_if_too_large(name, need)
                self._make_room(name, need)
            loaded = model_registry.load(
                served.resolved, device=self.device, dtype=self.dtype, announce=False
            )
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
            served.limits, served.labels = loaded.limits, loaded.labels()
            served.size_bytes = resident_bytes(loaded.model)
            if served.entry.default:
                self.runners[task] = served.runner
            self.budget.added(name, served.size_bytes)
            try:
                # The headers' estimate leaves out buffers the files do not hold.
                self.budget.refuse_if_too_large(name, served.size_bytes)
            except ModelTooLarge:
                self._unload(served)
                raise
            self._make_room(name, served.size_bytes)
            self._say_loaded(served, loaded.load_s)
            return served.runner

    @contextmanager
    def using(self, served: ServedModel) -> Iterator[None]:
        """Keep the model loaded while a claim runs on it; it becomes the most recently used."""
        name = served.entry.name
        with self._loading:
            self.budget.pin(name)
        try:
            yield
        finally:
            with self._loading:
                self.budget.unpin(name)

    def _make_room(self, name: str, size_bytes: int) -> None:
        for other in self.budget.to_evict(name, size_bytes):
            self._evict(self.served[other])
        limit = self.budget.limit_bytes
        if limit is not None and self.budget.loaded_bytes > limit:
            log.warning(
                "models loaded (%s) are over the memory budget (%s): the others are in use",
                describe_bytes(self.budget.loaded_bytes),
                describe_bytes(limit),
                extra={"action": "model_budget_exceeded", "model": name},
            )

    def _evict(self, served: ServedModel) -> None:
        self._unload(served)
        MODEL_EVICTIONS.labels(model=served.entry.name).inc()
        log.info(
            "evicted %s model %r (%s) to keep under the memory budget; %s of %s loaded",
            served.entry.task.value,
            served.entry.name,
            describe_bytes(served.size_bytes or 0),
            describe_bytes(self.budget.loaded_bytes),
            describe_bytes(self.budget.limit_bytes or 0),
            extra=self._memory_fields(served, "model_evicted"),
        )

    def _unload(self, served: ServedModel) -> None:
        """Drop the model's runner and cache, and give its memory back."""
        runner, served.runner, served.cache = served.runner, None, None
        if runner is None:
            return
        if self.runners.get(served.entry.task) is runner:
            del self.runners[served.entry.task]
        self.budget.removed(served.entry.name)
        MODELS_LOADED_BYTES.set(self.budget.loaded_bytes)
        # Freed in place: a reference left anywhere (the drain's last runner, a logged
        # traceback) must not keep the weights alive past their eviction.
        runner.loaded.model.to("meta")
        del runner
        release_model_memory(self.device)

    def _say_loaded(self, served: ServedModel, load_s: float) -> None:
        MODEL_LOADS.labels(model=served.entry.name).inc()
        MODELS_LOADED_BYTES.set(self.budget.loaded_bytes)
        budget = self.budget.limit_bytes
        log.info(
            "loaded %s model %r (%s, revision %s) on %s as %s in %.1f s: %s; %s loaded%s",
            served.entry.task.value,
            served.entry.name,
            served.resolved.source,
            served.resolved.revision,
            self.device,
            str(self.dtype).removeprefix("torch."),
            load_s,
            describe_bytes(served.size_bytes or 0),
            describe_bytes(self.budget.loaded_bytes),
            f" of a {describe_bytes(budget)} budget" if budget is not None else "",
            extra=self._memory_fields(served, "model_loaded"),
        )

    def _memory_fields(self, served: ServedModel, action: str) -> dict[str, Any]:
        return {
            "action": action,
            "task": served.entry.task.value,
            "model": served.entry.name,
            "bytes": served.size_bytes,
            "loaded_bytes": self.budget.loaded_bytes,
            "budget_bytes": self.budget.limit_bytes,
        }

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
        with self.db.write() as session:
            worker_registry.register_worker(
                session,
                name=self.name,
                device=str(self.device),
                dtype=str(self.dtype).removeprefix("torch."),
                # The task defaults, as workers before the catalogue listed them.
                models={
                    m.entry.task.value: {
                        "model": m.resolved.source,
                        "revision": m.resolved.revision,
                        "limits": m.limits.as_json(),
                    }
                    for m in self.served.values()
                    if m.entry.default and m.limits is not None
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
