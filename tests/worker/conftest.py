from collections.abc import Iterator

import pytest

from shared.config import Settings
from worker.runtime import WorkerRuntime


@pytest.fixture
def runtime(settings: Settings) -> Iterator[WorkerRuntime]:
    """A worker's warm state built in this process, on the test backend."""
    started = WorkerRuntime.start(settings)
    yield started
    started.stop()
