"""The web page at /ui in a real browser against the running service (both backends).

A user enters their key, uploads a feedback CSV, watches it run, reads the charts and the
extremes, and downloads the results; a long document's summary shows its chunk summaries.
Screenshots of each step are saved as test artifacts (build/test-artifacts/ui).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import browser
from tests.e2e.polling import all_results, wait_for_job, wait_until_partly_done
from tests.e2e.processes import Service

FEEDBACK_PARTS = {
    "billing": [
        "I was charged twice for the same order",
        "the invoice shows a fee nobody told me about",
        "the refund reached my card within a day",
        "paying by card was quick and simple",
    ],
    "shipping": [
        "the parcel arrived two weeks late",
        "the courier left the box in the rain",
        "delivery was faster than promised",
        "tracking told me exactly when the package would come",
    ],
    "quality": [
        "the handle snapped off after one use",
        "the fabric feels cheap and the seams are coming apart",
        "the blender is sturdy and works perfectly",
        "the jacket is warm and beautifully made",
    ],
}
ENDINGS = ["", " and I am not happy", " which I love", " honestly"]
PHONE = {"width": 390, "height": 844}


def feedback_rows(count: int) -> list[tuple[str, str]]:
    """Return `count` (ticket id, comment) rows of customer feedback."""
    phrases = [phrase for parts in FEEDBACK_PARTS.values() for phrase in parts]
    return [
        (
            f"T-{1000 + n}",
            f"{phrases[n % len(phrases)].capitalize()}{ENDINGS[n // len(phrases) % 4]}.",
        )
        for n in range(count)
    ]


def feedback_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket", "comment"])
        writer.writerows(rows)
    return path


def api_key(service: Service) -> str:
    return service.headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture(scope="module")
def model_dirs(model_dirs: Any, feedback_model_dir: Path) -> Any:
    """Classify with the model fitted on reviews, so the charts have complaints and praise."""
    return dataclasses.replace(model_dirs, sentiment=feedback_model_dir)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    yield from browser.launch()


@pytest.fixture
def page(chromium: Any, service: Service) -> Iterator[Any]:
    yield from browser.open_page(chromium, service.base_url)


def sign_in(page: Any, service: Service) -> None:
    browser.sign_in(page, api_key(service))


def test_bulk_feedback_from_upload_to_download(
    page: Any, service: Service, http: httpx.Client, tmp_path: Path, request: Any
) -> None:
    from playwright.sync_api import expect

    backend = request.node.callspec.params["service"]
    rows = feedback_rows(120)
    sign_in(page, service)

    page.get_by_label("Feedback file (CSV or JSONL)").check()
    page.get_by_label("File", exact=True).set_input_files(
        str(feedback_csv(tmp_path / "feedback.csv", rows))
    )
    page.get_by_label("Text column").fill("comment")
    page.get_by_label("Id column (optional)").fill("ticket")
    page.get_by_label("Categories (optional, comma-separated)").fill(", ".join(FEEDBACK_PARTS))
    page.get_by_label("Insights:").check()
    page.screenshot(path=browser.screenshot_path(f"{backend}-1-submit"), full_page=True)
    page.get_by_role("button", name="Submit").click()

    expect(page).to_have_url(re.compile(r"#/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[-1]
    expect(page.get_by_role("heading", level=1)).to_have_text("Sentiment of file feedback.csv")
    expect(page.locator("#job-progress-text")).to_contain_text(f"of {len(rows)} done")
    page.screenshot(path=browser.screenshot_path(f"{backend}-2-running"), full_page=True)

    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#job-progress-text")).to_contain_text(f"{len(rows)} of {len(rows)} done")
    job = wait_for_job(http, job_id)
    results = all_results(http, job_id)

    # The label chart draws the job's counts; the histogram counts every row once.
    bars = page.locator("[data-chart=labels] rect")
    expect(bars).to_have_count(len(job["labels"]))
    drawn = {
        bars.nth(i).get_attribute("data-label"): int(bars.nth(i).get_attribute("data-count"))
        for i in range(bars.count())
    }
    assert drawn == job["labels"]
    assert sum(drawn.values()) == len(rows)
    bins = page.locator("[data-chart=histogram] rect")
    expect(bins).to_have_count(10)
    assert sum(int(bins.nth(i).get_attribute("data-count")) for i in range(10)) == len(rows)

    # The most negative rows are the results with the lowest positive score, named by id.
    by_positivity = sorted(results, key=lambda r: (r["scores"]["POSITIVE"], r["index"]))
    negative = page.locator("#most-negative li")
    expect(negative).to_have_count(5)
    for position, result in enumerate(by_positivity[:5]):
        expect(negative.nth(position)).to_contain_text(f"id {result['custom_id']}")
        expect(negative.nth(position)).to_contain_text(dict(rows)[result["custom_id"]])
    most_positive = min(results, key=lambda r: (-r["scores"]["POSITIVE"], r["index"]))
    expect(page.locator("#most-positive li").first).to_contain_text(
        f"id {most_positive['custom_id']}"
    )
    first_rows = page.locator("#results-list tbody tr")
    expect(first_rows).to_have_count(20)
    for position in (0, 19):
        expect(first_rows.nth(position)).to_contain_text(results[position]["category"])

    # Insights: the table is the job's counts; each category's complaints have a summary.
    insights = job["insights"]
    assert insights["status"] == "done" and insights["categories"] == list(FEEDBACK_PARTS)
    table = page.locator("#insights-counts tbody tr")
    expect(table).to_have_count(len(FEEDBACK_PARTS))
    for row, category in enumerate(FEEDBACK_PARTS):
        counts = insights["counts"].get(category, {})
        cells = [category, *(f"{counts.get(label, 0)}" for label in sorted(job["labels"]))]
        expect(table.nth(row).locator("th, td")).to_have_text([*cells, str(sum(counts.values()))])
    complaints = {c: n["count"] for c, n in insights["negative"].items() if n["count"]}
    assert complaints, "the fitted model finds complaints in this feedback"
    summaries = page.locator("#insights-negative article")
    expect(summaries).to_have_count(len(insights["negative"]))
    for category, entry in insights["negative"].items():
        article = summaries.filter(has_text=f"{category}: {entry['count']} negative")
        expect(article).to_have_count(1)
        if entry["summary"]:
            expect(article.locator("p")).to_have_text(entry["summary"])
    page.screenshot(path=browser.screenshot_path(f"{backend}-3-finished"), full_page=True)
    # The README's picture: what an analyst sees first.
    page.set_viewport_size({"width": 1200, "height": 1250})
    page.screenshot(path=browser.screenshot_path(f"{backend}-overview"))

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download results (CSV)").click()
    download = download_info.value
    assert download.suggested_filename == f"{job_id}-results.csv"
    downloaded = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [row["custom_id"] for row in downloaded] == [ticket for ticket, _ in rows]
    assert {row["label"] for row in downloaded} == set(job["labels"])


def test_the_results_table_fills_while_the_job_runs(
    page: Any, service: Service, http: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    rows = feedback_rows(20_000)
    with feedback_csv(tmp_path / "big.csv", rows).open("rb") as file:
        submitted = http.post(
            "/v1/batches",
            files={"file": ("big.csv", file)},
            data={"task": "sentiment", "text_column": "comment", "id_column": "ticket"},
        )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    wait_until_partly_done(http, job_id)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    sign_in(page, service)
    page.goto(f"/ui/#/jobs/{job_id}")

    table = page.locator("#results-list tbody tr")
    expect(table).to_have_count(20)
    status_with_rows = page.locator("#job-status").text_content()
    assert status_with_rows == "running", "rows are shown before the job ends"
    assert any(f"/v1/jobs/{job_id}/events" in url for url in requested), "it follows the events"
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=300_000)
    expect(table).to_have_count(20)
    expect(table.locator("td:first-child")).to_have_text([str(n) for n in range(20)])
    expect(table.nth(0)).to_contain_text(rows[0][0])


def test_document_summary_shows_its_chunk_summaries(
    page: Any, service: Service, http: httpx.Client, tmp_path: Path, request: Any
) -> None:
    from playwright.sync_api import expect

    backend = request.node.callspec.params["service"]
    sentences = [f"Paragraph {n} tells how the harbour town rebuilt its mill." for n in range(300)]
    document = tmp_path / "report.txt"
    document.write_text(" ".join(sentences))
    sign_in(page, service)

    page.get_by_label("Summarize").check()
    page.get_by_label("Document file (.txt)").check()
    page.get_by_label("File", exact=True).set_input_files(str(document))
    page.get_by_label("Longest summary, in tokens (optional)").fill("20")
    page.get_by_role("button", name="Submit").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Summary of document")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    result = page.locator("#results-list article")
    expect(result).to_have_count(1)
    expect(result.locator(".summary")).not_to_be_empty()
    chunks = result.locator("details")
    # The chunks shown and the parts that summed up their summaries add up to the job's count.
    job = http.get(f"/v1/jobs/{page.url.rsplit('/', 1)[-1]}").json()
    shown = http.get(f"/v1/jobs/{job['id']}/results", params={"include_chunks": True}).json()[
        "items"
    ][0]
    parts = len(shown["chunks"]) + shown.get("reduce_parts", 0)
    assert parts == job["progress"]["chunks"]["total"]
    expect(chunks.locator("summary")).to_contain_text(
        f"Summaries of its {len(shown['chunks'])} chunks"
    )
    if shown.get("reduce_parts"):
        expect(chunks.locator("summary")).to_contain_text(f"({parts} parts in all)")
    expect(chunks.locator("li").first).to_be_hidden()
    chunks.locator("summary").click()
    expect(chunks.locator("li").first).to_be_visible()
    expect(chunks.locator("li").first).to_contain_text("characters 0\u2013")
    page.screenshot(path=browser.screenshot_path(f"{backend}-document"), full_page=True)


def test_a_bad_upload_says_what_is_wrong_and_stays(
    page: Any, service: Service, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    sign_in(page, service)
    page.get_by_label("Feedback file (CSV or JSONL)").check()
    page.get_by_label("File", exact=True).set_input_files(
        str(feedback_csv(tmp_path / "feedback.csv", feedback_rows(3)))
    )
    page.get_by_label("Text column").fill("no_such_column")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("alert")).to_contain_text("no_such_column")
    expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()


def test_readable_on_a_phone_and_by_keyboard(page: Any, service: Service, request: Any) -> None:
    from playwright.sync_api import expect

    backend = request.node.callspec.params["service"]
    page.set_viewport_size(PHONE)
    sign_in(page, service)
    page.reload()

    # Nothing is wider than the phone's screen, so nothing needs sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # Every form control is named by a label.
    unnamed = page.evaluate(
        """[...document.querySelectorAll('input, select, textarea')]
            .filter(e => !e.labels?.length && !e.getAttribute('aria-label'))
            .map(e => e.id || e.name)"""
    )
    assert unnamed == []

    # From the top, Tab reaches the skip link first, then the form can be used by keys alone.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_role("textbox", name="Text", exact=True).focus()
    page.keyboard.type("The delivery was late and the box was crushed.")
    submit = page.get_by_role("button", name="Submit")
    for _ in range(10):
        if submit.evaluate("button => button === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(submit).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=browser.screenshot_path(f"{backend}-phone-job"), full_page=True)


def test_the_page_is_served_with_a_strict_content_security_policy(http: httpx.Client) -> None:
    page = http.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert http.get("/ui", follow_redirects=True).url.path == "/ui/"
    assert http.get("/ui/app.js").headers["content-type"].startswith("text/javascript")


def label_values_cut_off(page: Any) -> list[str]:
    """Return the label chart's values drawn past the chart's right edge."""
    return page.evaluate(
        """[...document.querySelectorAll('[data-chart=labels]')].flatMap(svg => {
            const edge = svg.getBoundingClientRect().right + 0.5;
            return [...svg.querySelectorAll('text')]
                .filter(t => t.getBoundingClientRect().right > edge).map(t => t.textContent);
        })"""
    )


def test_the_page_says_what_it_knows_and_draws_every_number_whole(
    page: Any, service: Service
) -> None:
    """The page's wording and charts, fed answers the API gives, in the real browser."""
    page.goto("/ui/")
    said = page.evaluate(
        """async () => {
            const f = await import('./format.js');
            const job = (queue) => ({
                task: 'sentiment', status: 'queued', queue,
                progress: {total: 3, done: 0, errored: 0, chunks: {total: 0, done: 0}},
            });
            const soon = new Date(Date.now() + 5000).toISOString();
            const q = {model: 'm', workers: 1, items_per_s: 0, estimated_finish_at: null};
            return {
                noWorker: f.progressLine(job({...q, workers: 0})),
                noPace: f.progressLine(job(q)),
                paced: f.progressLine(job({...q, items_per_s: 2.5, estimated_finish_at: soon})),
                noNegative: f.negativeText({count: 0, summary: null, error: null}, 'done'),
                unsummarized: f.negativeText({count: 2, summary: null, error: null}, 'done'),
                chunks: f.chunksLine({chunks: new Array(21).fill({}), reduce_parts: 2}),
            };
        }"""
    )
    assert said["noWorker"].endswith("waiting: no worker runs m yet")
    assert said["noPace"].endswith("no pace known yet"), "no number while no pace is known"
    assert said["paced"].endswith(" left") and "2.5 items/s" in said["paced"]
    assert said["noNegative"] == "No negative feedback in this category."
    assert "pending" not in said["unsummarized"], "a finished job waits for nothing"
    assert (
        said["chunks"] == "Summaries of its 21 chunks, summed up in 2 more parts (23 parts in all)"
    )

    # Big counts: every value stays inside the chart, on a laptop and on a phone.
    for viewport in ({"width": 1280, "height": 800}, PHONE):
        page.set_viewport_size(viewport)
        page.evaluate(
            """async () => {
                const {labelChart} = await import('./charts.js');
                const box = document.createElement('div');
                box.style.maxWidth = '520px';
                document.getElementById('main').append(box);
                labelChart(box, {NEGATIVE: 1234, POSITIVE: 567890});
            }"""
        )
        assert label_values_cut_off(page) == [], viewport


def test_a_feedback_file_reads_the_same_on_the_page_as_in_the_api(
    page: Any, service: Service, http: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    rows = [
        ("Q-1", "The jacket is warm and beautifully made."),
        ("Q-2", "The blender is sturdy and works perfectly."),
        ("S-1", "The parcel arrived two weeks late and the box was crushed."),
        ("S-2", "The courier left the box in the rain."),
        ("S-3", "   "),
    ]
    with feedback_csv(tmp_path / "small.csv", rows).open("rb") as file:
        submitted = http.post(
            "/v1/batches",
            files={"file": ("small.csv", file)},
            data={
                "task": "sentiment",
                "text_column": "comment",
                "id_column": "ticket",
                "options": '{"categories": ["shipping", "quality"], "insights": true}',
            },
        )
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(http, submitted.json()["id"])
    results = all_results(http, job["id"])
    sign_in(page, service)
    page.goto(f"/ui/#/jobs/{job['id']}")
    expect(page.locator("#job-status")).to_have_text(job["status"])

    # A category none of whose texts is negative says so; it waits for no summary.
    quiet = [c for c, entry in job["insights"]["negative"].items() if entry["count"] == 0]
    assert quiet, job["insights"]
    for category in quiet:
        article = page.locator("#insights-negative article").filter(has_text=f"{category}: 0")
        expect(article.locator("p")).to_have_text("No negative feedback in this category.")

    # The table names rows by the index the API uses, also in the row's error, with the text.
    table = page.locator("#results-list table")
    expect(table.locator("thead th")).to_have_text(
        ["Index", "Id", "Text", "Label", "Score", "Category"]
    )
    cells = table.locator("tbody tr")
    expect(cells).to_have_count(len(rows))
    for result, (ticket, comment) in zip(results, rows, strict=True):
        row = cells.nth(result["index"])
        expect(row.locator("td").nth(0)).to_have_text(str(result["index"]))
        expect(row.locator("td").nth(1)).to_have_text(ticket)
        if "error" not in result:
            expect(row.locator("td").nth(2)).to_have_text(comment)
    failed = results[-1]
    assert failed["error"].startswith("index 4 (line 6 of the file): ")
    expect(cells.nth(4)).to_contain_text(f"Failed: {failed['error']}")
    assert label_values_cut_off(page) == []

    # The jobs list shows each job's id and the start of its first text.
    page.get_by_role("link", name="All jobs").click()
    listed = page.locator(f"li[data-job-id='{job['id']}']")
    expect(listed).to_contain_text(job["id"])
    expect(listed.locator(".preview")).to_have_text(rows[0][1])
