"""The model catalogue: the named models of each task, read from TEXTQ_MODELS_FILE.

The file is TOML, one table per model, keyed by task and name:

    [sentiment.sst2]
    source = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    revision = "714eb0f"      # optional pin
    default = true            # exactly one per task that has models
    shadow = "twitter"        # optional: another model of the task, and the share of
    shadow_fraction = 0.1     # the default's items it would also run (parsed, not run yet)

Without the file, TEXTQ_SENTIMENT_MODEL and TEXTQ_SUMMARIZATION_MODEL make a catalogue of one
default model per task, named after its source (`default_name`), so nothing changes for
users who never write one. The embedding model (TEXTQ_EMBEDDING_MODEL) is not in it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.states import Task

TASK_NAMES = frozenset(task.value for task in Task)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MODEL_FIELDS = ("source", "revision", "default", "shadow", "shadow_fraction")
MODELS_FILE_SETTING = "TEXTQ_MODELS_FILE"


class CatalogueError(ValueError):
    """The models file (TEXTQ_MODELS_FILE) is missing, unreadable or not a valid catalogue."""


@dataclass(frozen=True)
class CatalogueModel:
    """One named model of a task: where its files are, and its place in the task.

    `source`: a hub id or a local directory. `revision`: the pinned revision (None: the
    newest; the exact one is recorded on every job either way). `shadow`: the name of
    another model of the task to compare on `shadow_fraction` (0 < f <= 1) of this one's
    items.
    """

    name: str
    task: Task
    source: str
    revision: str | None = None
    default: bool = False
    shadow: str | None = None
    shadow_fraction: float | None = None


class Catalogue:
    """Every model of every task, by name (names are unique over the whole catalogue)."""

    def __init__(self, models: Iterable[CatalogueModel], *, origin: str) -> None:
        self.models = list(models)
        self.origin = origin  # the file it came from, or the settings, for messages
        self.by_name = {model.name: model for model in self.models}

    def of_task(self, task: Task) -> list[CatalogueModel]:
        """Return the task's models, its default first."""
        return sorted(
            (m for m in self.models if m.task is task), key=lambda m: (not m.default, m.name)
        )

    def default(self, task: Task) -> CatalogueModel | None:
        """Return the task's default model, or None where the catalogue has none for it."""
        return next((m for m in self.models if m.task is task and m.default), None)

    def names(self, task: Task) -> list[str]:
        return [m.name for m in self.of_task(task)]

    def choose(self, task: Task, name: str | None) -> CatalogueModel:
        """Return the model a job of `task` asks for by name (None: the task's default).

        Raises LookupError saying which names the task has.
        """
        if name is None:
            chosen = self.default(task)
        else:
            found = self.by_name.get(name)
            chosen = found if found is not None and found.task is task else None
        if chosen is None:
            names = self.names(task)
            offered = ", ".join(repr(n) for n in names) if names else "none"
            asked = f"no {task.value} model named {name!r}" if name else "no default model"
            raise LookupError(f"{asked}; the {task.value} models are: {offered}")
        return chosen

    def served_by_worker(self, tasks: list[Task], wanted: list[str]) -> list[CatalogueModel]:
        """Return the models a worker of `tasks` serves: those named in `wanted`, or (none
        named) every model of its tasks. Raises LookupError naming one it cannot serve."""
        mine = {model.name: model for task in tasks for model in self.of_task(task)}
        if not wanted:
            return list(mine.values())
        for name in wanted:
            if name in mine:
                continue
            other = self.by_name.get(name)
            why = (
                f"it is a {other.task.value} model and this worker serves "
                f"{', '.join(t.value for t in tasks)} (TEXTQ_WORKER_TASKS / --tasks)"
                if other is not None
                else f"the catalogue ({self.origin}) has no model of that name"
            )
            raise LookupError(
                f"cannot serve model {name!r}: {why}; the models of this worker's tasks are: "
                f"{', '.join(mine) or 'none'}"
            )
        return [mine[name] for name in dict.fromkeys(wanted)]

    def for_source(self, task: Task, source: str) -> CatalogueModel | None:
        """Return the model of `task` with this source (the first by name), if any."""
        return next((m for m in self.of_task(task) if m.source == source), None)


def default_name(source: str) -> str:
    """Return the name a model of the settings gets: the last part of its hub id or path
    (`facebook/bart-large-cnn` -> `bart-large-cnn`), with characters names do not allow
    replaced by `-`."""
    tail = source.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or "model"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", tail).lstrip("._-")[:100]
    return cleaned or "model"


def from_settings(settings: Settings) -> Catalogue:
    """Return the catalogue of TEXTQ_MODELS_FILE, or one default per task from the two
    model settings. Raises CatalogueError for a bad file.

    Read once per process and settings: editing the file takes a restart (or a new worker).
    """
    return _built(
        settings.models_file,
        tuple((task, settings.model_for(task), settings.revision_for(task)) for task in Task),
    )


@lru_cache(maxsize=16)
def _built(
    models_file: Path | None, settings_models: tuple[tuple[Task, str, str | None], ...]
) -> Catalogue:
    if models_file is not None:
        return load_file(models_file)
    names = {task: default_name(source) for task, source, _ in settings_models}
    # Two directories of the same name, or one named after the other task (a task's name
    # stands for its default wherever a model is named).
    clash = {Task(n) for n in names.values() if n in TASK_NAMES} - {
        task for task, name in names.items() if name == task.value
    }
    if len(set(names.values())) < len(names) or clash:
        names = {task: f"{task.value}-{name}" for task, name in names.items()}
    return Catalogue(
        (
            CatalogueModel(
                name=names[task], task=task, source=source, revision=revision, default=True
            )
            for task, source, revision in settings_models
        ),
        origin="TEXTQ_SENTIMENT_MODEL and TEXTQ_SUMMARIZATION_MODEL",
    )


def load_file(path: Path) -> Catalogue:
    """Read and check a models file. Raises CatalogueError saying what is wrong in it."""
    try:
        with path.expanduser().open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise CatalogueError(
            f"cannot read the models file {str(path)!r} ({MODELS_FILE_SETTING}): "
            f"{error.strerror or error}"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogueError(f"the models file {str(path)!r} is not valid TOML: {error}") from None
    return parse(data, origin=str(path))


def parse(data: dict[str, Any], *, origin: str) -> Catalogue:
    """Check a parsed models file and return its catalogue. Raises CatalogueError."""
    tasks = ", ".join(task.value for task in Task)
    models: list[CatalogueModel] = []
    for task_name, table in data.items():
        try:
            task = Task.parse(task_name)
        except ValueError:
            raise _bad(origin, f"unknown task [{task_name}]; the tasks are: {tasks}") from None
        if not isinstance(table, dict) or not table:
            raise _bad(
                origin, f"[{task_name}] must hold one table per model, e.g. [{task_name}.NAME]"
            )
        for name, fields in table.items():
            models.append(_model(origin, task, name, fields))
    if not models:
        raise _bad(
            origin, f"it names no model; add tables such as [sentiment.NAME] (tasks: {tasks})"
        )
    _check_catalogue(origin, models)
    return Catalogue(models, origin=origin)


def _model(origin: str, task: Task, name: str, fields: Any) -> CatalogueModel:
    where = f"[{task.value}.{name}]"
    if not MODEL_NAME.match(name):
        raise _bad(origin, f"{where}: a model name is 1-100 letters, digits, '.', '_' or '-'")
    if name in TASK_NAMES:
        raise _bad(
            origin,
            f"{where}: a model cannot be named like a task ({', '.join(sorted(TASK_NAMES))}), "
            "which stands for the task's default wherever a model is named; rename it",
        )
    if not isinstance(fields, dict):
        raise _bad(origin, f'{where} must be a table with at least source = "hub id or dir"')
    unknown = sorted(set(fields) - set(MODEL_FIELDS))
    if unknown:
        raise _bad(
            origin,
            f"{where}: unknown field {unknown[0]!r}; the fields are: {', '.join(MODEL_FIELDS)}",
        )
    source = fields.get("source")
    if not isinstance(source, str) or not source.strip():
        raise _bad(origin, f'{where} needs source = "a hub id or a local model directory"')
    revision = fields.get("revision")
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise _bad(origin, f"{where}: revision must be a text (a commit, branch or tag)")
    default = fields.get("default", False)
    if not isinstance(default, bool):
        raise _bad(origin, f"{where}: default must be true or false")
    shadow = fields.get("shadow")
    if shadow is not None and not isinstance(shadow, str):
        raise _bad(origin, f"{where}: shadow must name another {task.value} model")
    fraction = fields.get("shadow_fraction")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1
    ):
        raise _bad(origin, f"{where}: shadow_fraction must be a number above 0, at most 1")
    return CatalogueModel(
        name=name,
        task=task,
        source=source,
        revision=revision,
        default=default,
        shadow=shadow,
        shadow_fraction=float(fraction) if fraction is not None else None,
    )


def _check_catalogue(origin: str, models: list[CatalogueModel]) -> None:
    """Check what spans models: unique names, one default per task, shadows that exist."""
    seen: dict[str, CatalogueModel] = {}
    for model in models:
        if model.name in seen:
            other = seen[model.name]
            raise _bad(
                origin,
                f"the name {model.name!r} is used by [{other.task.value}.{model.name}] and "
                f"[{model.task.value}.{model.name}]; names must be unique over all tasks",
            )
        seen[model.name] = model
    for task in {model.task for model in models}:
        of_task = [m for m in models if m.task is task]
        defaults = [m.name for m in of_task if m.default]
        if len(defaults) != 1:
            found = f"{len(defaults)} ({', '.join(defaults)})" if defaults else "none"
            raise _bad(
                origin,
                f"the {task.value} models need exactly one default = true, found {found}; "
                f"mark one of: {', '.join(m.name for m in of_task)}",
            )
    for model in models:
        if model.shadow is None:
            continue
        target = seen.get(model.shadow)
        if target is None or target.task is not model.task or target is model:
            others = [m.name for m in models if m.task is model.task and m is not model]
            raise _bad(
                origin,
                f"[{model.task.value}.{model.name}]: shadow {model.shadow!r} names no other "
                f"{model.task.value} model; it may name: {', '.join(others) or 'none (add one)'}",
            )
    for model in models:  # after the names a shadow may take, the likelier mistake
        if (model.shadow is None) != (model.shadow_fraction is None):
            raise _bad(
                origin,
                f"[{model.task.value}.{model.name}]: shadow and shadow_fraction go together; "
                "set both or neither",
            )


def _bad(origin: str, message: str) -> CatalogueError:
    return CatalogueError(f"models file {origin}: {message}")
