"""Choosing a catalogue model per job from the page, the command line and the Python client,
against a running service whose models file has two sentiment models (both backends)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ModelDirs
from tests.e2e import browser
from tests.e2e.conftest import create_api_key, two_sentiment_models
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import Service
from textq.client import Client, TextqError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service_env(
    tmp_path_factory: pytest.TempPathFactory, model_dirs: ModelDirs, second_sentiment_model: Path
) -> dict[str, str]:
    path = tmp_path_factory.mktemp("catalogue") / "models.toml"
    return {
        "TEXTQ_MODELS_FILE": str(two_sentiment_models(path, model_dirs, second_sentiment_model))
    }


def default_revision(http: httpx.Client) -> str:
    """Return the exact revision of the default sentiment model (the warm-up job ran it)."""
    (sst2,) = [m for m in http.get("/v1/models").json()["models"] if m["name"] == "sst2"]
    (revision,) = sst2["loaded_revisions"]
    return str(revision)


def assert_ran_on_v2(job: dict[str, Any], http: httpx.Client, second: Path) -> None:
    assert job["status"] == "succeeded", job
    assert (job["model_name"], job["model"]) == ("v2", str(second))
    assert job["model_revision"], "the exact revision is recorded"
    assert job["model_revision"] != default_revision(http), "other weights, other revision"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    yield from browser.launch()


@pytest.fixture
def page(chromium: Any, service: Service) -> Iterator[Any]:
    yield from browser.open_page(chromium, service.base_url)


def test_the_page_offers_the_tasks_models_and_runs_the_one_picked(
    page: Any, service: Service, http: httpx.Client, second_sentiment_model: Path, request: Any
) -> None:
    from playwright.sync_api import expect

    backend = request.node.callspec.params["service"]
    browser.sign_in(page, service.headers["Authorization"].removeprefix("Bearer "))
    picker = page.get_by_label("Model", exact=True)
    expect(picker).to_have_value("sst2")
    expect(picker.locator("option")).to_have_text(["sst2 (default)", "v2"])
    page.get_by_label("Summarize").check()
    expect(picker.locator("option")).to_have_text(["bart (default)"])
    page.get_by_label("Sentiment").check()
    expect(picker).to_have_value("sst2")

    picker.select_option("v2")
    page.get_by_label("Text", exact=True).fill(f"the parcel came late {uuid.uuid4().hex}")
    page.screenshot(path=browser.screenshot_path(f"{backend}-model-picked"), full_page=True)
    page.get_by_role("button", name="Submit").click()

    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[-1]
    job = wait_for_job(http, job_id, timeout_s=120)
    assert_ran_on_v2(job, http, second_sentiment_model)
    shown = page.locator("#job-model")
    expect(shown).to_have_text(
        f"Model v2 ({second_sentiment_model}) · revision {job['model_revision']}"
    )
    page.screenshot(path=browser.screenshot_path(f"{backend}-model-shown"), full_page=True)


@pytest.fixture
def cli_env(service: Service) -> dict[str, str]:
    return {
        **os.environ,
        "TEXTQ_URL": service.base_url,
        "TEXTQ_API_KEY": create_api_key(service.env, tenant="model-cli-tests"),
    }


def textq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "textq", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cli_runs_a_job_on_the_model_given(
    cli_env: dict[str, str], http: httpx.Client, second_sentiment_model: Path, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex
    done = textq(
        cli_env, "submit", "sentiment", f"I love it {run}", "--model", "v2", "--wait", "--json"
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert_ran_on_v2(job, http, second_sentiment_model)
    shown = textq(cli_env, "status", job["id"])
    said = f"model v2: {second_sentiment_model} @ {job['model_revision']}"
    assert said in shown.stdout.splitlines(), shown.stdout

    rows = tmp_path / "rows.csv"
    rows.write_text(f"text\ngreat {run}\nawful {run}\n")
    bulk = textq(cli_env, "bulk", str(rows), "--model", "v2", "--wait", "--json")
    assert bulk.returncode == 0, bulk.stderr
    assert_ran_on_v2(json.loads(bulk.stdout), http, second_sentiment_model)

    wrong = textq(cli_env, "submit", "sentiment", "hello", "--model", "bart")
    assert wrong.returncode != 0
    assert "the sentiment models are: 'sst2', 'v2'" in wrong.stderr, wrong.stderr


def test_the_client_runs_a_job_on_the_model_given(
    service: Service, http: httpx.Client, second_sentiment_model: Path, tmp_path: Path
) -> None:
    key = create_api_key(service.env, tenant="model-client-tests")
    run = uuid.uuid4().hex
    with Client(service.base_url, api_key=key) as client:
        assert [(m.name, m.default) for m in client.models() if m.task.value == "sentiment"] == [
            ("sst2", True),
            ("v2", False),
        ]
        job = client.submit("sentiment", texts=[f"so good {run}", f"so bad {run}"], model="v2")
        assert job.model_name == "v2"
        done = client.wait(job.id, timeout_s=120)
        assert_ran_on_v2(done.model_dump(mode="json"), http, second_sentiment_model)

        rows = tmp_path / "rows.csv"
        rows.write_text(f"text\nfine {run}\n")
        uploaded = client.upload_batch(rows, task="sentiment", model="v2")
        done = client.wait(uploaded.id, timeout_s=120)
        assert_ran_on_v2(done.model_dump(mode="json"), http, second_sentiment_model)

        with pytest.raises(TextqError) as refused:
            client.submit("sentiment", text="hello", model="nope")
    assert refused.value.status == 422
    assert "the sentiment models are: 'sst2', 'v2'" in str(refused.value)
