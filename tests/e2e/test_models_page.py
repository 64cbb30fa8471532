"""The page's Models view in a real browser, against a running service whose sentiment default
is shadowed by a second model: both models, their drift rows and the shadow figures, as the
API gives them (both backends)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from shared.db import Database
from shared.models import Job
from tests.conftest import ModelDirs
from tests.e2e import browser
from tests.e2e.polling import TERMINAL, wait_for_job
from tests.e2e.processes import Service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service_env(
    tmp_path_factory: pytest.TempPathFactory, model_dirs: ModelDirs, second_sentiment_model: Path
) -> dict[str, str]:
    """A models file whose default `sst2` runs every text again on `v2`."""
    path = tmp_path_factory.mktemp("catalogue") / "models.toml"
    path.write_text(
        f'[sentiment.sst2]\nsource = "{model_dirs.sentiment}"\ndefault = true\n'
        'shadow = "v2"\nshadow_fraction = 1.0\n\n'
        f'[sentiment.v2]\nsource = "{second_sentiment_model}"\n\n'
        f'[summarize.bart]\nsource = "{model_dirs.summarization}"\ndefault = true\n'
    )
    return {"TEXTQ_MODELS_FILE": str(path)}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    yield from browser.launch()


@pytest.fixture
def page(chromium: Any, service: Service) -> Iterator[Any]:
    yield from browser.open_page(chromium, service.base_url)


def shadow_jobs_unfinished(service: Service) -> int:
    """Count the shadow jobs not finished yet (they are hidden from the API)."""
    env = service.env
    url = env.get("TEXTQ_DATABASE_URL") or f"sqlite:///{env['TEXTQ_DATA_DIR']}/textq.db"
    db = Database(url, application_name="textq-tests")
    try:
        with db.read() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.shadow.is_(True), Job.status.not_in(TERMINAL))
                )
                or 0
            )
    finally:
        db.dispose()


def settled_shadow_report(service: Service, http: httpx.Client, texts: int) -> dict[str, Any]:
    """Return sst2's shadow report once at least `texts` texts are compared and no shadow
    job is left to run, so the page reads the same figures."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report = http.get("/v1/models/sst2/shadow").raise_for_status().json()
        if report["items_compared"] >= texts and shadow_jobs_unfinished(service) == 0:
            return report  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"the shadow jobs did not finish: {report}\n{service.logs_text()}")


def test_the_models_view_shows_each_model_its_drift_and_the_shadow_figures(
    page: Any, service: Service, http: httpx.Client, request: Any
) -> None:
    from playwright.sync_api import expect

    backend = request.node.callspec.params["service"]
    run = uuid.uuid4().hex  # texts no earlier run sent: none comes from the result cache
    texts = [f"great value {run}", f"broke on day two {run}", f"late parcel {run}", f"ok {run}"]
    job = http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}})
    assert wait_for_job(http, job.json()["id"])["status"] == "succeeded"
    report = settled_shadow_report(service, http, len(texts))
    assert report["default"] == "sst2" and report["candidate"] == "v2"
    models = http.get("/v1/models").json()["models"]

    browser.sign_in(page, service.headers["Authorization"].removeprefix("Bearer "))
    page.get_by_role("link", name="Models").click()
    expect(page.get_by_role("heading", name="Models", level=1)).to_be_visible()
    sections = page.locator("section.model")
    expect(sections.locator("h2")).to_have_text(["sst2", "v2", "bart"])

    for model in models:
        section = page.locator(f"section[data-model='{model['name']}']")
        expect(section).to_contain_text(model["source"])
        workers = section.locator(".workers li")
        expect(workers).to_have_count(len(model["workers"]))
        for n, worker in enumerate(model["workers"]):
            state = "loaded" if worker["loaded"] else "not loaded yet"
            expect(workers.nth(n)).to_contain_text(f"{worker['device']} · {worker['dtype']}")
            expect(workers.nth(n)).to_contain_text(state)

        # A fresh model has no reference week yet: no PSI, with the API's reason.
        drift = http.get(f"/v1/models/{model['name']}/drift").json()
        rows = section.locator("table.drift tbody tr")
        expect(rows).to_have_count(len(drift["features"]))
        for n, feature in enumerate(drift["features"]):
            assert feature["psi"] is None, feature
            expect(rows.nth(n).locator("th")).to_have_text(feature["feature"])
            expect(rows.nth(n).locator("td.psi")).to_have_text(f"no PSI: {feature['reason']}")
            expect(rows.nth(n).locator("td").nth(2)).to_have_text(f"{feature['current_items']:,}")

    sst2, v2, bart = (page.locator(f"section[data-model='{n}']") for n in ("sst2", "v2", "bart"))
    expect(sst2.locator(".facts")).to_have_text(
        "sentiment · default · shadowed by v2 on 100% of its texts"
    )
    expect(v2.locator(".facts")).to_have_text(
        "sentiment · not the default · candidate shadowing sst2"
    )
    expect(bart.locator(".facts")).to_have_text("summarize · default")
    expect(bart.locator(".shadow-box")).to_have_count(0)  # in no comparison: no read, no error
    agreement = f"{100 * report['label_agreement']:.1f}%"
    delta = f"{report['mean_abs_delta_score']:.4f}"
    for section in (sst2, v2):  # either name reports the same comparison
        figures = section.locator(".shadow-box dd")
        expect(figures).to_have_text(
            [
                "sst2 (default) with v2 (candidate)",
                "last 24 h",
                f"{report['items_compared']:,}",
                agreement,
                delta,
            ]
        )
    page.screenshot(path=browser.screenshot_path(f"{backend}-models"), full_page=True)


def test_the_models_view_marks_high_drift_and_survives_a_missing_comparison(
    page: Any, service: Service
) -> None:
    """The view's wording fed answers the API gives, and a comparison that is not there."""
    page.goto("/ui/")
    said = page.evaluate(
        """async () => {
            const m = await import('./models.js');
            const summary = {task: 'summarize', default: 'bart', candidate: 'small',
                window_h: 24, items_compared: 1234, limited: false,
                mean_rouge_l_f: 0.4567, mean_length_ratio: 0.8};
            return {
                high: m.psiText({psi: 0.35, reason: null}),
                low: m.psiText({psi: 0.05, reason: null}),
                none: m.psiText({psi: null, reason: 'not enough texts'}),
                summary: m.shadowFigures(summary),
            };
        }"""
    )
    assert said["high"] == {"text": "⚠ 0.350 (above 0.2)", "high": True}
    assert said["low"] == {"text": "0.050", "high": False}
    assert said["none"] == {"text": "no PSI: not enough texts", "high": False}
    assert said["summary"][2:] == [
        ["Items compared", "1,234"],
        ["Mean ROUGE-L F", "0.457"],
        ["Mean length ratio", "0.80"],
    ]

    # A shadow read refused (as a 404 would be) says so in its place; the rest still shows.
    browser.sign_in(page, service.headers["Authorization"].removeprefix("Bearer "))
    page.route(
        "**/v1/models/sst2/shadow",
        lambda route: route.fulfill(
            status=404,
            content_type="application/problem+json",
            body='{"title": "No shadow comparison", "status": 404, "detail": "none here"}',
        ),
    )
    page.goto("/ui/#/models")
    from playwright.sync_api import expect

    sst2 = page.locator("section[data-model='sst2']")
    expect(sst2.locator(".shadow-box")).to_have_text("No shadow comparison: none here")
    expect(sst2.locator("table.drift tbody tr")).to_have_count(2)
    expect(page.locator("section[data-model='v2'] .shadow-box dd").first).to_be_visible()
