import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.migrate import upgrade
from tests import services
from tests.conftest import BACKENDS, ModelDirs, sqlite_copy
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import Service, free_port, start, wait_until_ready

E2E_TENANT = "e2e"


def backend_env(
    backend: str,
    tmp,
    request: pytest.FixtureRequest,
    finalize: Callable[[Callable[[], None]], None] | None = None,
) -> dict[str, str]:
    """Return the env of a service on `backend`: on Postgres, in a database of its own,
    dropped by `finalize` (by default when `request`'s scope ends)."""
    env = {
        "TEXTQ_DATA_DIR": str(tmp / "data"),
        # Unique on the shared Redis: each pytest-xdist process numbers its temp dirs alike.
        "TEXTQ_QUEUE_PREFIX": f"textq-e2e-{tmp.name}-{uuid.uuid4().hex[:8]}",
        "TEXTQ_AUTH": "off",
    }
    if backend == "postgres":
        url = services.create_postgres_database()
        (finalize or request.addfinalizer)(lambda: services.drop_postgres_database(url))
        request.getfixturevalue("redis_url")
        env |= {"TEXTQ_DATABASE_URL": url, "TEXTQ_BROKER_URL": services.REDIS_URL}
        upgrade(url)
    else:
        sqlite_copy(request, tmp / "data" / "textq.db")
    return env


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    """Settings a test module adds to its service's (override it, e.g. for a models file)."""
    return {}


@pytest.fixture(scope="session")
def second_sentiment_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier's shape with other weights: a second sentiment model."""
    from tests.model_factory import build_sentiment_model

    return build_sentiment_model(tmp_path_factory.mktemp("second") / "sentiment", seed=1)


def two_sentiment_models(path: Path, model_dirs: ModelDirs, second: Path) -> Path:
    """Write a models file of two sentiment models, `sst2` (the default) and `v2`, and the
    summarization model as `bart`; return its path."""
    path.write_text(
        f'[sentiment.sst2]\nsource = "{model_dirs.sentiment}"\ndefault = true\n\n'
        f'[sentiment.v2]\nsource = "{second}"\n\n'
        f'[summarize.bart]\nsource = "{model_dirs.summarization}"\ndefault = true\n'
    )
    return path


class ServicePool:
    """The services of modules that run on the default settings, one per backend and set
    of models, kept while a module still to run needs it: starting an API, a worker and
    the webhooks process costs tens of seconds, and these modules only add jobs of their
    own (texts no other test sends) and compare what they read with what they read before.
    An idle worker still sweeps twice a second, so none is kept past its last user.
    """

    def __init__(self) -> None:
        self.running: dict[tuple[str, ModelDirs], _Kept] = {}
        self.exit_codes: list[dict[str, int]] = []

    def get(
        self,
        key: tuple[str, ModelDirs],
        user: str,
        start_service: Callable[[Callable[[Callable[[], None]], None]], Service],
    ) -> Service:
        """Return the running service of this backend and these models for `user` (what
        `pool_user` says of the asking test), starting it the first time with
        `start_service(finalize)`; what it passes `finalize` runs after it stops."""
        if key not in self.running:
            cleanups: list[Callable[[], None]] = []
            self.running[key] = _Kept(start_service(cleanups.append), cleanups, set())
        kept = self.running[key]
        kept.users.add(user)
        return kept.service

    def stop_unless_used_by(self, users: set[str]) -> None:
        """Stop every kept service none of `users` has used, noting how each process
        exited, then clean up after it."""
        for key in [key for key, kept in self.running.items() if not kept.users & users]:
            kept = self.running.pop(key)
            self.exit_codes.append(stop_service(kept.service))
            while kept.cleanups:
                kept.cleanups.pop()()


@dataclass
class _Kept:
    service: Service
    cleanups: list[Callable[[], None]]
    users: set[str]


POOL = ServicePool()


def pool_user(item: pytest.Item) -> str | None:
    """Return who a test is to the pool (`module_pool_user`), or None for a test that
    starts its services itself (or none)."""
    module = getattr(item, "module", None)
    if "service" not in getattr(item, "fixturenames", ()) or hasattr(module, "service_env"):
        return None
    return module_pool_user(module)


def module_pool_user(module: Any) -> str:
    """Return "default" for a test module on the default models, or the module's name for
    one with models of its own (its `model_dirs` fixture)."""
    return str(module.__name__) if hasattr(module, "model_dirs") else "default"


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Between modules, stop the kept services no test still to run will use."""
    if nextitem is not None and getattr(nextitem, "module", None) is getattr(item, "module", None):
        return
    still = item.session.items[item.session.items.index(nextitem) :] if nextitem else []
    POOL.stop_unless_used_by({user for later in still if (user := pool_user(later))})


@pytest.fixture(scope="session")
def service_pool() -> Iterator[ServicePool]:
    yield POOL
    POOL.stop_unless_used_by(set())
    for codes in POOL.exit_codes:
        assert codes["worker"] == 0, codes


@pytest.fixture(scope="module", params=BACKENDS)
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_dirs: ModelDirs,
    service_env: dict[str, str],
    service_pool: ServicePool,
) -> Iterator[Service]:
    """`textq api` and `textq worker` as real processes, on SQLite or on Postgres + Redis.

    Modules on the default settings share one per backend and set of models
    (`ServicePool`); a module that adds settings (`service_env`) gets its own, stopped
    after it.
    """

    def start_service(finalize: Callable[[Callable[[], None]], None]) -> Service:
        return start_e2e_service(request, tmp_path_factory, model_dirs, service_env, finalize)

    if not service_env:
        user = module_pool_user(request.module)
        yield service_pool.get((request.param, model_dirs), user, start_service)
        return
    svc = start_service(request.addfinalizer)
    yield svc
    codes = stop_service(svc)
    assert codes["worker"] == 0, svc.logs_text()


def start_e2e_service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_dirs: ModelDirs,
    service_env: dict[str, str],
    finalize: Callable[[Callable[[], None]], None],
) -> Service:
    """Start an API, a worker and the webhooks process on `request.param`'s backend;
    `finalize` is given what must run once they have stopped."""
    tmp = tmp_path_factory.mktemp(f"e2e-{request.param}")
    port = free_port()
    env = backend_env(request.param, tmp, request, finalize) | {
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_DTYPE": "float32",
        "TEXTQ_SWEEP_INTERVAL_S": "0.5",
        "TEXTQ_LOG_LEVEL": "INFO",
        # Receivers in tests listen on loopback; retries a second apart instead of hours.
        "TEXTQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TEXTQ_WEBHOOK_RETRY_SCHEDULE_S": "0,1,1,1,1,1,1,1,1,1",
        "TEXTQ_AUTH": "required",
        "TEXTQ_RETENTION_SWEEP_INTERVAL_S": "1",
        # Tests poll fast; the limiter itself is tested in tests/api/test_auth.py.
        "TEXTQ_RATE_LIMIT_PER_S": "500",
        "TEXTQ_WORKER_METRICS_PORT": str(free_port()),
        "TEXTQ_WEBHOOKS_METRICS_PORT": str(free_port()),
    }
    env |= service_env
    key = create_api_key(env, tenant=E2E_TENANT)
    svc = Service(
        base_url=f"http://127.0.0.1:{port}",
        env=env,
        logs=tmp / "logs",
        headers={"Authorization": f"Bearer {key}"},
    )
    svc.processes.append(start("api", ["api", "--port", str(port)], env, svc.logs))
    svc.processes.append(start("worker", ["worker", "--device", "cpu"], env, svc.logs))
    svc.processes.append(start("webhooks", ["webhooks"], env, svc.logs))
    wait_until_ready(svc.base_url, svc.processes)
    warm_up(svc)
    return svc


def stop_service(svc: Service) -> dict[str, int]:
    """Stop the service's processes, last started first; return each one's exit status."""
    return {p.name: p.stop() for p in reversed(svc.processes)}


def create_api_key(env: dict[str, str], *, tenant: str) -> str:
    """Make a key with `textq keys create`, as an operator does; return the key it printed."""
    made = subprocess.run(
        [sys.executable, "-m", "textq", "keys", "create", "--tenant", tenant],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return made.stdout.strip().splitlines()[-1]


def warm_up(svc: Service) -> None:
    """Run one job through, so the worker has loaded its models before tests start."""
    with httpx.Client(base_url=svc.base_url, timeout=30, headers=svc.headers) as client:
        job = client.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "warm"}})
        try:
            wait_for_job(client, job.json()["id"], timeout_s=120)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{svc.logs_text()}") from None


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=30, headers=service.headers) as client:
        yield client
