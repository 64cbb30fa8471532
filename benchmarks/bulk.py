"""Bulk files on Postgres: ingest of a 1 M-row CSV upload, and the streamed results export.

    python -m benchmarks.bulk [--rows 1000000] [--worker]

Starts `textq api` on a database of its own (no worker: ingest and export are what is
timed), uploads the CSV, samples the API process's memory throughout, then writes a result
into every row straight in SQL (the model's speed is the other benchmark's business) and
streams the results back as JSONL and CSV. The baseline, in the same run on the same rows,
is the way in without /v1/batches: the JSON API in jobs of 10,000 texts. With --worker,
a real `textq worker` runs every row instead (a tiny model: the worker's own overhead and
memory over a million rows are what is measured, not the model's speed).
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import text

from benchmarks import data
from benchmarks.run import (
    RESULTS,
    WORK,
    machine,
    postgres_service_env,
    update_readme,
    worker_peak_rss_mb,
)
from shared.db import Database
from tests import services
from tests.e2e.processes import start, wait_until_ready
from tests.model_factory import build_sentiment_model

JSON_JOB_TEXTS = 10_000


def write_csv(path: Path, rows: int) -> int:
    """Write `rows` real feedback texts with ticket ids; return the file's size in bytes."""
    texts = data.feedback(50_000)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["ticket", "comment"])
        for number in range(rows):
            writer.writerow([f"T-{number:07d}", texts[number % len(texts)]])
    return path.stat().st_size


class PeakRss(threading.Thread):
    """Sample a process's resident memory until stopped; keep the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak_mb = self.process.memory_info().rss / 2**20
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 2**20)


def upload(base: str, path: Path) -> tuple[str, float]:
    started = time.perf_counter()
    with path.open("rb") as file, httpx.Client(timeout=None) as client:
        response = client.post(
            f"{base}/v1/batches",
            files={"file": (path.name, file, "text/csv")},
            data={"task": "sentiment", "text_column": "comment", "id_column": "ticket"},
        )
    response.raise_for_status()
    return response.json()["id"], time.perf_counter() - started


def json_api_baseline(base: str, rows: int) -> float:
    """Return rows/s submitting the same texts through POST /v1/jobs, 10,000 per job."""
    texts = data.feedback(rows)
    started = time.perf_counter()
    with httpx.Client(timeout=None) as client:
        for first in range(0, rows, JSON_JOB_TEXTS):
            body = {"task": "sentiment", "input": {"texts": texts[first : first + JSON_JOB_TEXTS]}}
            client.post(f"{base}/v1/jobs", json=body).raise_for_status()
    return rows / (time.perf_counter() - started)


def finish_with_results(url: str, job_id: str) -> None:
    """Give every row a result, as a worker would have, and finish the job."""
    db = Database(url, application_name="textq-bench")
    result = {"label": "POSITIVE", "score": 0.98, "scores": {"NEGATIVE": 0.02, "POSITIVE": 0.98}}
    with db.write() as session:
        session.execute(
            text(
                "UPDATE job_items SET status = 'done', result = CAST(:result AS jsonb) "
                "WHERE job_id = :job AND status = 'pending'"
            ),
            {"result": json.dumps(result), "job": job_id},
        )
        session.execute(
            text(
                "UPDATE jobs SET status = 'partial', done_items = total_items - error_items, "
                "finished_at = now() WHERE id = :job"
            ),
            {"job": job_id},
        )
    db.dispose()


def run_through_worker(
    base: str, url: str, job_id: str, env: dict[str, str], logs: Path
) -> dict[str, Any]:
    """Run the job on a real `textq worker` (tiny model); return its speed and memory."""
    db = Database(url, application_name="textq-bench")
    with db.write() as session:  # the baseline's jobs are not what is timed here
        session.execute(text("DELETE FROM jobs WHERE id <> :job"), {"job": job_id})
    db.dispose()
    worker = start(
        "worker", ["worker", "--device", "cpu"], env | {"TEXTQ_WORKER_TASKS": "sentiment"}, logs
    )
    started = time.perf_counter()
    peak_at_tenth = 0.0
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            while True:
                job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
                progress = job["progress"]
                if not peak_at_tenth and progress["done"] >= progress["total"] / 10:
                    peak_at_tenth = worker_peak_rss_mb(worker)
                if job["status"] not in ("queued", "running"):
                    break
                if worker.popen.poll() is not None:
                    raise RuntimeError(f"the worker exited: {(logs / 'worker.log').read_text()}")
                time.sleep(2)
        elapsed = time.perf_counter() - started
        peak_at_end = worker_peak_rss_mb(worker)
    finally:
        worker.stop()
    return {
        "worker_rows_per_s": round(job["progress"]["total"] / elapsed),
        "worker_peak_rss_mb_at_10pct": round(peak_at_tenth),
        "worker_peak_rss_mb_at_end": round(peak_at_end),
        "worker_labels": job["labels"],
    }


def export(base: str, job_id: str, fmt: str) -> tuple[int, float]:
    started = time.perf_counter()
    lines = 0
    with (
        httpx.Client(timeout=None) as client,
        client.stream("GET", f"{base}/v1/jobs/{job_id}/results", params={"format": fmt}) as reply,
    ):
        reply.raise_for_status()
        for chunk in reply.iter_bytes():
            lines += chunk.count(b"\n")
    return lines, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=100_000)
    parser.add_argument(
        "--worker",
        action="store_true",
        help="run the rows through a real worker with a tiny model instead of writing results",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    logs = WORK / "logs-bulk"
    logs.mkdir(exist_ok=True)
    path = WORK / "feedback-1m.csv"
    size = write_csv(path, args.rows)

    model = build_sentiment_model(WORK / "tiny-sentiment")
    url, port, env = postgres_service_env(
        {"TEXTQ_MAX_ITEMS_PER_JOB": str(JSON_JOB_TEXTS), "TEXTQ_SENTIMENT_MODEL": str(model)}
    )
    api = start("api", ["api", "--port", str(port)], env, logs)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, [api], timeout_s=120)
        idle_mb = psutil.Process(api.popen.pid).memory_info().rss / 2**20
        sampler = PeakRss(api.popen.pid)
        sampler.start()
        job_id, ingest_s = upload(base, path)
        sampler.stopping.set()
        sampler.join()
        baseline = json_api_baseline(base, args.baseline_rows)
        through_worker: dict[str, Any] = {}
        if args.worker:
            through_worker = run_through_worker(base, url, job_id, env, logs)
        else:
            finish_with_results(url, job_id)
        jsonl_lines, jsonl_s = export(base, job_id, "jsonl")
        csv_lines, csv_s = export(base, job_id, "csv")
    finally:
        api.stop()
        services.drop_postgres_database(url)
        path.unlink(missing_ok=True)
    assert jsonl_lines == args.rows and csv_lines == args.rows + 1, (jsonl_lines, csv_lines)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine(),
        "rows": args.rows,
        "file_mb": round(size / 2**20, 1),
        "ingest_s": round(ingest_s, 1),
        "ingest_rows_per_s": round(args.rows / ingest_s),
        "json_api_rows_per_s": round(baseline),
        "api_idle_rss_mb": round(idle_mb),
        "api_peak_rss_mb": round(sampler.peak_mb),
        "api_rss_growth_mb": round(sampler.peak_mb - idle_mb),
        "export_jsonl_rows_per_s": round(args.rows / jsonl_s),
        "export_csv_rows_per_s": round(args.rows / csv_s),
    } | through_worker
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bulk-{result['when']}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    update_readme(table(result), marker="bulk")


def table(result: dict[str, Any]) -> str:
    """Return the run as the README's markdown table."""
    rows = result["rows"]
    return "\n".join(
        [
            f"Run {result['when']}, {result['machine']['cpu']}, {result['machine']['cores']} "
            f"cores; {rows:,} rows, a {result['file_mb']} MB CSV, on Postgres.",
            "",
            "| measure | result | target |",
            "|---|---|---|",
            f"| ingest through `/v1/batches` | {result['ingest_rows_per_s']:,} rows/s "
            f"({result['ingest_s']} s) | ≥ 20,000 rows/s |",
            f"| baseline: the same texts through `POST /v1/jobs`, 10,000 per job | "
            f"{result['json_api_rows_per_s']:,} rows/s "
            f"({result['ingest_rows_per_s'] / result['json_api_rows_per_s']:.1f}x slower) | |",
            f"| API memory during the upload | {result['api_idle_rss_mb']} → "
            f"{result['api_peak_rss_mb']} MB (+{result['api_rss_growth_mb']} MB) | < +100 MB |",
            f"| results export, JSONL | {result['export_jsonl_rows_per_s']:,} rows/s "
            "| ≥ 50,000 rows/s |",
            f"| results export, CSV | {result['export_csv_rows_per_s']:,} rows/s "
            "| ≥ 50,000 rows/s |",
            *(
                [
                    f"| every row through a real worker (tiny model) | "
                    f"{result['worker_rows_per_s']:,} rows/s | |",
                    f"| worker peak memory at 10% of the rows / at the end | "
                    f"{result['worker_peak_rss_mb_at_10pct']} / "
                    f"{result['worker_peak_rss_mb_at_end']} MB | flat |",
                ]
                if "worker_rows_per_s" in result
                else []
            ),
        ]
    )


if __name__ == "__main__":
    main()
