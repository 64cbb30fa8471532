"""The fault runs, short: 200 jobs per fault against private Postgres and Redis servers.

`make faults` runs the same scenarios with 5,000 jobs each and prints the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from tests.conftest import ModelDirs
from tests.faults.harness import VERDICT_PROPERTY, RunConfig
from tests.faults.scenarios import SCENARIOS, Scenario, run_scenario
from tests.faults.servers import PrivatePostgres

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

JOBS = 200
DURATION_S = 20


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_accepted_job_finishes_exactly_once(
    scenario: Scenario,
    postgres: PrivatePostgres,
    model_dirs: ModelDirs,
    tmp_path,
    record_property,
):
    config = RunConfig(
        jobs=JOBS,
        duration_s=DURATION_S,
        models=(model_dirs.sentiment, model_dirs.summarization),
        root=tmp_path,
        finish_timeout_s=300,
        webhook_down_s=15,
    )
    verdict = run_scenario(scenario, config, postgres)
    # Each fault's row, printed as a table at the end of the run (tests/conftest.py).
    record_property(VERDICT_PROPERTY, (scenario.fault, dataclasses.asdict(verdict)))
    assert verdict.problems == []
    assert verdict.jobs >= JOBS
    assert verdict.faults >= 1, "the fault never struck"
    assert (verdict.lost, verdict.duplicated, verdict.undelivered_webhooks) == (0, 0, 0)
