"""Interactive latency beside a bulk job: single-text jobs idle, then while 200k rows run.

    python -m benchmarks.fairness [--rows 200000] [--jobs 200]

On textq api + one textq worker (Postgres, Redis, the full-size distilbert classifier with
random weights), the same single-text jobs run three times: on an idle service; while a
200k-row file job runs at its default priority (files 2, small jobs 6); and, as the
baseline without priorities, while the same file runs at the small jobs' own priority.
The figure is each busy p95 over the idle p95 (target: at most 3x with priorities).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from benchmarks import data, loadgen
from benchmarks.models import distilbert_classifier
from benchmarks.run import RESULTS, WORK, machine, textq_service, warm_up
from tests.model_factory import build_summarization_model

CLIENTS = 4


def feedback_csv(rows: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text"])
    for text in data.feedback(rows):
        writer.writerow([text])
    return buffer.getvalue().encode()


def single_text_jobs(base: str, count: int) -> dict[str, Any]:
    bodies = [{"task": "sentiment", "input": {"text": t}} for t in data.feedback(count, seed=7)]
    return loadgen.run_jobs(base, bodies, clients=CLIENTS).summary()


def while_bulk_runs(base: str, upload: bytes, jobs: int, priority: int | None) -> dict[str, Any]:
    """Start the file job, wait until it runs, time the single-text jobs, cancel the file."""
    form = {"task": "sentiment"} | ({"priority": str(priority)} if priority is not None else {})
    with httpx.Client(base_url=base, timeout=None) as http:
        bulk = http.post("/v1/batches", files={"file": ("bulk.csv", upload)}, data=form)
        bulk_id = bulk.raise_for_status().json()["id"]
        while http.get(f"/v1/jobs/{bulk_id}").json()["progress"]["done"] == 0:
            time.sleep(0.2)
        run = single_text_jobs(base, jobs)
        done = http.post(f"/v1/jobs/{bulk_id}/cancel").json()["progress"]["done"]
    return run | {"bulk_rows_done_meanwhile": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    logs = WORK / "logs-fairness"
    logs.mkdir(exist_ok=True)
    models = {
        "sentiment": distilbert_classifier(WORK / "distilbert"),
        "summarize": build_summarization_model(WORK / "tiny-bart"),
    }
    upload = feedback_csv(args.rows)
    started = time.perf_counter()
    # No result cache: repeated feedback would let the bulk job skip the model.
    env = {"TEXTQ_WORKER_TASKS": "sentiment", "TEXTQ_RESULT_CACHE": "false"}
    with textq_service(models, logs, env) as (base, _worker):
        warm_up(base, ["sentiment"])
        idle = single_text_jobs(base, args.jobs)
        with_priorities = while_bulk_runs(base, upload, args.jobs, priority=None)
        same_priority = while_bulk_runs(base, upload, args.jobs, priority=6)
    result = {
        "when": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "machine": machine(),
        "bulk_rows": args.rows,
        "single_text_jobs": args.jobs,
        "clients": CLIENTS,
        "idle": idle,
        "bulk_at_file_priority": with_priorities,
        "bulk_at_same_priority": same_priority,
        "p95_ratio_with_priorities": round(with_priorities["p95_s"] / idle["p95_s"], 2),
        "p95_ratio_same_priority": round(same_priority["p95_s"] / idle["p95_s"], 2),
        "seconds": round(time.perf_counter() - started),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fairness-{result['when']}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
