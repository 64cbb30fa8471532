"""A real Prometheus, configured from deploy/prometheus, scrapes live textq processes.

Two API replicas (as in production, each reading the same queue from the database; one of
them `--workers 2`, whose processes must count as one), a worker
that serves sentiment only, and the webhook sender run on Postgres + Redis; Prometheus scrapes
them every second and evaluates the shipped alerts. Summarize jobs wait for a worker that does
not run, so the queue depth holds still while it is compared with what `GET /v1/jobs` says.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.db import Database
from shared.drift import hour_of
from shared.models import DriftCount, utcnow
from tests.conftest import ModelDirs
from tests.deploy.prometheus import (
    CONFIG,
    RULES,
    alert_rules,
    api_get,
    dashboard_queries,
    keda_query,
    query,
    start_prometheus,
)
from tests.e2e.conftest import backend_env
from tests.e2e.polling import wait_for_job
from tests.e2e.processes import Process, free_port, start, wait_until_ready
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

METRIC_NAME = re.compile(r"\btextq_[a-z0-9_]+")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
MATCHER = re.compile(r"\{([^}]*)\}")
UNFINISHED = {"queued", "running"}


@dataclass
class Scraped:
    """The textq processes, the Prometheus scraping them, and where each listens."""

    api_urls: list[str]
    prometheus_url: str
    processes: list[Process]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-2000:]}" for p in self.processes)


@pytest.fixture(scope="module")
def scraped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_dirs: ModelDirs
) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("prometheus-scrape")
    env = backend_env("postgres", tmp, request) | {
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_DTYPE": "float32",
        "TEXTQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TEXTQ_RATE_LIMIT_PER_S": "500",
        "TEXTQ_WORKER_METRICS_PORT": str(free_port()),
        "TEXTQ_WEBHOOKS_METRICS_PORT": str(free_port()),
    }
    seed_drift(env["TEXTQ_DATABASE_URL"])
    api_ports = [free_port(), free_port()]
    logs = tmp / "logs"
    # One replica runs two processes, as `textq api --workers N` does in production.
    processes = [
        start("api-1", ["api", "--port", str(api_ports[0]), "--workers", "2"], env, logs),
        start("api-2", ["api", "--port", str(api_ports[1])], env, logs),
    ]
    processes.append(
        start("worker", ["worker", "--device", "cpu", "--tasks", "sentiment"], env, logs)
    )
    processes.append(start("webhooks", ["webhooks"], env, logs))
    try:
        api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]
        for url in api_urls:
            wait_until_ready(url, processes)
        targets = {
            "textq-api": [f"127.0.0.1:{port}" for port in api_ports],
            "textq-worker": [f"127.0.0.1:{env['TEXTQ_WORKER_METRICS_PORT']}"],
            "textq-webhooks": [f"127.0.0.1:{env['TEXTQ_WEBHOOKS_METRICS_PORT']}"],
        }
        prometheus, prometheus_url = start_prometheus(
            scraping(targets), write_rules_beside(tmp / "prometheus")
        )
        processes.append(prometheus)
        yield Scraped(api_urls=api_urls, prometheus_url=prometheus_url, processes=processes)
    finally:
        codes = {p.name: p.stop() for p in reversed(processes)}
    assert codes["worker"] == 0, "\n".join(p.output() for p in processes)


def seed_drift(url: str) -> None:
    """Give a model a week of traffic nine days ago and a day of it now, a little shifted
    (PSI about 0.01, below the alert), so the API has a drift gauge from its first scrape."""
    now = utcnow()
    rows = [(now - timedelta(days=9), "POSITIVE", 60), (now - timedelta(days=9), "NEGATIVE", 40)]
    rows += [(now, "POSITIVE", 55), (now, "NEGATIVE", 45)]
    db = Database(url, application_name="textq-tests")
    with db.write() as session:
        session.add_all(
            DriftCount(
                model="/models/seeded",
                tenant_id="default",
                hour=hour_of(moment),
                feature="label",
                bin=label,
                item_count=count,
            )
            for moment, label, count in rows
        )
    db.dispose()


def write_rules_beside(folder: Path) -> Path:
    """Copy the shipped rules into `folder`, where the config naming them relatively goes."""
    folder.mkdir(parents=True)
    shutil.copy(RULES, folder / RULES.name)
    return folder


def scraping(targets: dict[str, list[str]]) -> dict[str, Any]:
    """Return the shipped config with its jobs pointed at `targets`, scraping every second."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


def labels_used(expr: str) -> set[str]:
    """Return the labels an expression groups by or matches on."""
    labels = {name.strip() for group in GROUPING.findall(expr) for name in group.split(",")}
    for matchers in MATCHER.findall(expr):
        labels |= {m.split("=")[0].rstrip("!~").strip() for m in matchers.split(",")}
    return labels - {""}


def run_jobs(scraped: Scraped) -> list[dict[str, Any]]:
    """Run sentiment jobs to the end (one webhook each) and leave summarize items waiting.

    Each job goes over a connection of its own, so a replica's processes share them out.
    Return the jobs as `GET /v1/jobs` lists them.
    """
    run = uuid.uuid4().hex
    receiver = Receiver().start()
    try:
        sentiment = []
        for i, url in enumerate(scraped.api_urls * 3):
            texts = [f"fine {run} {i}", f"bad {i}"]
            body = {"task": "sentiment", "input": {"texts": texts}, "webhook_url": receiver.url}
            sent = httpx.post(f"{url}/v1/jobs", json=body, timeout=30).raise_for_status()
            sentiment.append(sent.json()["id"])
            body = {"task": "summarize", "input": {"texts": [f"long day {run} {i}"] * (i + 1)}}
            httpx.post(f"{url}/v1/jobs", json=body, timeout=30).raise_for_status()
        with httpx.Client(base_url=scraped.api_urls[0], timeout=30) as http:
            for job_id in sentiment:
                assert wait_for_job(http, job_id)["status"] == "succeeded"
            deadline = time.monotonic() + 30
            while len(receiver.received) < len(sentiment) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(receiver.received) == len(sentiment), scraped.logs()
            listed = http.get("/v1/jobs", params={"limit": 100}).raise_for_status().json()
    finally:
        receiver.stop()
    return listed["items"]  # type: ignore[no-any-return]


def wait_for(what: str, check: Any, scraped: Scraped, timeout_s: float = 30) -> Any:
    """Poll `check()` until it returns something true; fail saying `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found, f"{what} not seen in Prometheus after {timeout_s} s\n{scraped.logs()}"
    return found


def test_prometheus_scrapes_every_process_and_sees_the_queue_get_v1_jobs_shows(scraped):
    prom = scraped.prometheus_url
    jobs = run_jobs(scraped)
    waiting = sum(
        job["progress"]["total"] - job["progress"]["done"] - job["progress"]["errored"]
        for job in jobs
        if job["status"] in UNFINISHED
    )
    assert (len(jobs), waiting) == (12, 1 + 2 + 3 + 4 + 5 + 6)  # summarize: no worker serves it

    def targets_up() -> dict[str, int]:
        active = api_get(prom, "/api/v1/targets", state="active")["activeTargets"]
        up: dict[str, int] = {}
        for target in active:
            up[target["labels"]["job"]] = up.get(target["labels"]["job"], 0) + (
                target["health"] == "up"
            )
        return up if up == {"textq-api": 2, "textq-worker": 1, "textq-webhooks": 1} else {}

    wait_for("every target up", targets_up, scraped)

    # Both replicas read the same queue from the database...
    def both_replicas_report_it() -> bool:
        series = query(prom, 'textq_queue_depth{task="summarize"}')
        return len(series) == 2 and all(float(s["value"][1]) == waiting for s in series)

    wait_for(
        f"textq_queue_depth {waiting} from both API replicas", both_replicas_report_it, scraped
    )
    # ...so KEDA's query and the dashboard count it once, not once per replica.
    keda = query(prom, keda_query())
    assert [(s["metric"], float(s["value"][1])) for s in keda] == [({}, waiting)]
    depth = next(expr for expr in dashboard_queries() if "textq_queue_depth" in expr)
    per_task = {s["metric"]["task"]: float(s["value"][1]) for s in query(prom, depth)}
    assert per_task == {"sentiment": 0, "summarize": waiting}

    # Every job is counted once whichever replica or process took it, in every scrape: a
    # counter that jumps between processes' own counts would read to rate() as resets.
    submitted = 'sum(textq_jobs_submitted_total{task=~"sentiment|summarize"})'
    assert [float(s["value"][1]) for s in query(prom, submitted)] == [len(jobs)]
    for function in ("min_over_time", "max_over_time"):
        over = f"sum({function}(textq_jobs_submitted_total[3s]))"
        assert [float(s["value"][1]) for s in query(prom, over)] == [len(jobs)], function
    assert [
        float(s["value"][1]) for s in query(prom, "sum(resets(textq_jobs_submitted_total[1m]))")
    ] == [0]

    expressions = dashboard_queries() + [rule["expr"] for rule in alert_rules()]
    for expr in expressions:
        for name in set(METRIC_NAME.findall(expr)):
            series = wait_for(name, lambda name=name: query(prom, name), scraped)
            wanted = labels_used(expr) - ({"le"} if not name.endswith("_bucket") else set())
            for sample in series:
                assert wanted <= set(sample["metric"]), f"{name} lacks {wanted}: {sample}"
    for expr in dashboard_queries():
        wait_for(f"a value of {expr}", lambda expr=expr: query(prom, expr), scraped)

    # The tasks the worker counts are the tasks the queue is read by (the stall alert joins them).
    queue_tasks = {s["metric"]["task"] for s in query(prom, "textq_queue_depth")}
    worker_tasks = {s["metric"]["task"] for s in query(prom, "textq_items_processed_total")}
    assert worker_tasks == {"sentiment"} and worker_tasks <= queue_tasks

    # The rules evaluate without errors, and the one alert due is the stalled summarize queue
    # (pending: it fires after its `for`).
    def stalled() -> list[dict[str, Any]]:
        groups = api_get(prom, "/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
        assert not [rule for rule in rules if rule["health"] == "err"], rules
        if any(rule["health"] != "ok" for rule in rules):
            return []  # not evaluated yet
        return [a for rule in rules for a in rule.get("alerts", [])]

    alerts = wait_for("TextqWorkerStalled pending", stalled, scraped)
    assert [(a["labels"]["alertname"], a["labels"]["task"], a["state"]) for a in alerts] == [
        ("TextqWorkerStalled", "summarize", "pending")
    ]
