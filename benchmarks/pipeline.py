"""The pipeline around the model, with a model that costs almost nothing (as on a GPU).

    python -m benchmarks.pipeline [--rows 200000] [--jobs 2000] [--profile]

On a fast accelerator a classifier's forward is nearly free, and what textq does around it
(claiming, tokenizing, padding, building and writing result rows, counting, finishing jobs,
and for small jobs the API itself) is the limit. The 2-layer test classifier stands in for
that model here. Everything is measured in one run, each figure against its baseline:

- the in-process limit: the same tokenizer and model forward, length-sorted batches of 64,
  no database and no HTTP, on the same rows;
- a bulk CSV through `/v1/batches` on Postgres, one worker, result cache off, from the
  upload's first byte to the job's `succeeded` (its ratio to the limit, and the overhead per
  row: end-to-end time per row minus the limit's);
- one-text jobs from 50 concurrent clients (submit, long-poll, read the results), beside the
  seed's naive Flask server running the same model, one `pipeline` call per request;
- `POST /v1/jobs` alone at a fixed offered rate (open loop), its latency percentiles.

With `--profile`, py-spy samples the worker during the bulk run and the API during the
small jobs, and the run's JSON names the functions where their time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import data, loadgen
from benchmarks.run import (
    RESULTS,
    WORK,
    machine,
    naive_server,
    postgres_service_env,
)
from tests import services
from tests.e2e.processes import Process, start, wait_until_ready
from tests.model_factory import build_sentiment_model, build_summarization_model

LIMIT_BATCH = 64
CLIENTS = 50
ROWS = 200_000
JOBS = 2_000


def in_process_limit(model_dir: Path, texts: list[str]) -> dict[str, Any]:
    """Return rows/s of tokenizer + forward alone: length-sorted batches of 64, no DB, no HTTP.

    Tokenizing every text once (to sort by length), padding each batch and the forward with
    a softmax are all timed; nothing is written anywhere. A text longer than the model's
    window runs as consecutive windows (the tokenizer's overflowing tokens), as textq runs
    every chunk of it: truncating would leave out 7% of the feedback's tokens.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Only a fast tokenizer returns the overflowing windows as rows of their own.
    assert tokenizer.is_fast, f"{model_dir} has no fast tokenizer"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker under test runs (TEXTQ_TORCH_THREADS=1)
    window = model.config.max_position_embeddings
    with torch.inference_mode():
        warm = texts[:LIMIT_BATCH]
        model(
            **tokenizer(warm, truncation=True, max_length=window, padding=True, return_tensors="pt")
        )
        started = time.perf_counter()
        ids = tokenizer(
            texts,
            truncation=True,
            max_length=window,
            padding=False,
            return_overflowing_tokens=True,
        )["input_ids"]
        order = sorted(range(len(ids)), key=lambda position: len(ids[position]))
        labels: Counter[int] = Counter()
        for first in range(0, len(order), LIMIT_BATCH):
            batch = [ids[p] for p in order[first : first + LIMIT_BATCH]]
            padded = tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt")
            logits = model(**padded).logits
            labels.update(logits.softmax(dim=-1).argmax(dim=-1).tolist())
        elapsed = time.perf_counter() - started
    torch.set_num_threads(threads)
    return {
        "rows": len(texts),
        "windows": len(ids),
        "elapsed_s": round(elapsed, 2),
        "rows_per_s": len(texts) / elapsed,
    }


def write_csv(path: Path, texts: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["ticket", "comment"])
        for number, text in enumerate(texts):
            writer.writerow([f"T-{number:07d}", text])


@contextmanager
def service(model: Path, logs: Path, extra_env: dict[str, str]) -> Any:
    """`textq api` + one `textq worker` (sentiment only) on Postgres and Redis."""
    url, port, env = postgres_service_env(
        {
            "TEXTQ_SENTIMENT_MODEL": str(model),
            "TEXTQ_WORKER_TASKS": "sentiment",
            "TEXTQ_RESULT_CACHE": "false",
            # As the limit runs it: bf16 is a GPU's native speed-up, but on a CPU a model this
            # small runs many times slower in it than in float32.
            "TEXTQ_DTYPE": "float32",
            # One core for the model, as in the limit: the other is the pipeline's (API,
            # Postgres, the worker's own threads), as a GPU machine's other cores would be.
            "TEXTQ_TORCH_THREADS": "1",
            # One API key, as a real deployment has, with its rate limit out of the way.
            "TEXTQ_AUTH": "required",
            "TEXTQ_RATE_LIMIT_PER_S": "1000000",
            "TEXTQ_RATE_LIMIT_BURST": "1000000",
            "TEXTQ_MAX_ITEMS_PER_JOB": "100000",
        }
        | extra_env
    )
    made = start("keys", ["keys", "create", "--tenant", "bench"], env, logs)
    assert made.popen.wait(60) == 0, made.output()
    headers = {"Authorization": f"Bearer {made.output().strip().splitlines()[-1]}"}
    api = start("api", ["api", "--port", str(port)], env, logs)
    worker = start("worker", ["worker", "--device", "cpu"], env, logs)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, [api, worker], timeout_s=300)
        loadgen.run_jobs(
            base, [{"task": "sentiment", "input": {"text": "warm"}}], clients=1, headers=headers
        )
        yield base, headers, api, worker
    finally:
        worker.stop()
        api.stop()
        services.drop_postgres_database(url)


class Profiler:
    """py-spy sampling one process into collapsed stacks, summarised by function afterwards."""

    def __init__(self, process: Process | None, out: Path) -> None:
        self.out = out
        self.spy: subprocess.Popen[bytes] | None = None
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if process is not None and spy:
            self.spy = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(process.popen.pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                    "--threads",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> dict[str, Any] | None:
        if self.spy is None:
            return None
        self.spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        self.spy.wait(60)
        return top_functions(self.out)


def top_functions(collapsed: Path, count: int = 25) -> dict[str, Any]:
    """Return the share of samples each function appears in (inclusive), busiest first.

    Samples whose leaf is a wait (a lock, a socket, a sleep) count as idle, so the shares
    are of the time the process was busy.
    """
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():  # a frame's text (a thread's name) broken over lines
            continue
        n = int(samples)
        frames = stack.split(";")
        total += n
        leaf = frames[-1]
        if any(word in leaf for word in ("wait", "select", "poll", "sleep", "acquire", "recv")):
            idle += n
            continue
        for name in {frame.split(" (")[0] + " (" + frame.split(" (")[-1] for frame in frames[1:]}:
            inclusive[name] += n
    busy = max(total - idle, 1)
    return {
        "samples": total,
        "busy_share": round(busy / max(total, 1), 3),
        "inclusive_share_of_busy": {
            name: round(n / busy, 3) for name, n in inclusive.most_common(count)
        },
    }


def bulk(base: str, headers: dict[str, str], path: Path, rows: int) -> dict[str, Any]:
    """Upload the CSV and wait for the job to succeed; return rows/s end to end."""
    started = time.perf_counter()
    with (
        path.open("rb") as file,
        httpx.Client(base_url=base, timeout=None, headers=headers) as client,
    ):
        job = (
            client.post(
                "/v1/batches",
                files={"file": (path.name, file, "text/csv")},
                data={"task": "sentiment", "text_column": "comment", "id_column": "ticket"},
            )
            .raise_for_status()
            .json()
        )
        uploaded = time.perf_counter() - started
        while job["status"] in ("queued", "running"):
            job = client.get(f"/v1/jobs/{job['id']}", params={"wait_s": 1}).json()
    elapsed = time.perf_counter() - started
    assert job["status"] == "succeeded", job
    assert job["progress"]["done"] == rows, job["progress"]
    return {
        "rows_per_s": rows / elapsed,
        "elapsed_s": round(elapsed, 2),
        "upload_s": round(uploaded, 2),
    }


def offered_load(
    base: str, headers: dict[str, str], texts: list[str], rate: float
) -> dict[str, Any]:
    """POST one-text jobs at a fixed rate (open loop); return latency percentiles in ms."""
    latencies: list[float] = []

    async def main() -> None:
        async with loadgen.session(base, headers, connections=400) as http:

            async def one(text: str) -> None:
                sent = time.perf_counter()
                body = {"task": "sentiment", "input": {"text": text}}
                async with http.post("/v1/jobs", json=body) as response:
                    await response.read()
                    response.raise_for_status()
                latencies.append(time.perf_counter() - sent)

            tasks = []
            begin = time.perf_counter()
            for number, text in enumerate(texts):
                delay = begin + number / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(text)))
            await asyncio.gather(*tasks)

    started = time.perf_counter()
    asyncio.run(main())
    run = loadgen.Run(len(texts), time.perf_counter() - started, latencies)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(run.rate, 1),
        **{f"p{q}_ms": round(run.percentile(q) * 1000, 1) for q in (50, 95, 99)},
    }


def run(rows: int, jobs: int, rate: float, profile: bool = False) -> dict[str, Any]:
    """Run every workload above once; return their figures (and profiles, if asked)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = WORK / f"logs-pipeline-{stamp}"
    model = build_sentiment_model(WORK / "tiny-sentiment")
    summarizer = build_summarization_model(WORK / "tiny-summarize")
    texts = data.feedback(rows)
    small = data.feedback(jobs, seed=1)
    path = WORK / "pipeline.csv"
    write_csv(path, texts)
    out: dict[str, Any] = {"machine": machine(), "started": stamp, "rows": rows, "jobs": jobs}
    out["limit"] = in_process_limit(model, texts)
    with naive_server({"sentiment": model, "summarize": summarizer}, logs) as base:
        loadgen.run_requests(base, "/analyze", [{"text": "warm"}], clients=1)
        bodies = [{"text": t} for t in small]
        out["naive_small"] = loadgen.run_requests(
            base, "/analyze", bodies, clients=CLIENTS
        ).summary()
    with service(model, logs, {}) as (base, headers, api, worker):
        spy = Profiler(worker if profile else None, logs / "worker.collapsed")
        out["bulk"] = bulk(base, headers, path, rows)
        out["bulk"]["profile_worker"] = spy.stop()
        spy = Profiler(api if profile else None, logs / "api.collapsed")
        bodies = [{"task": "sentiment", "input": {"text": t}} for t in small]
        out["small"] = loadgen.run_jobs(base, bodies, clients=CLIENTS, headers=headers).summary()
        out["small"]["profile_api"] = spy.stop()
        out["submit"] = offered_load(base, headers, data.feedback(int(rate * 10), seed=3), rate)
    path.unlink(missing_ok=True)
    limit, e2e = out["limit"]["rows_per_s"], out["bulk"]["rows_per_s"]
    out["bulk"]["share_of_limit"] = round(e2e / limit, 3)
    out["bulk"]["overhead_us_per_row"] = round(1e6 * (1 / e2e - 1 / limit), 1)
    return out


def table(result: dict[str, Any]) -> str:
    """Return the run as markdown: each figure beside its baseline and the issue's target."""
    limit, bulk_run = result["limit"], result["bulk"]
    naive, small, submit = result["naive_small"], result["small"], result["submit"]
    return "\n".join(
        [
            "| near-free model (2-layer classifier) | textq | baseline | ratio | target |",
            "|---|---|---|---|---|",
            f"| bulk CSV, {result['rows']:,} rows, `/v1/batches` → succeeded (rows/s) | "
            f"{bulk_run['rows_per_s']:,.0f} | {limit['rows_per_s']:,.0f} in-process limit | "
            f"{bulk_run['share_of_limit']:.0%} | ≥ 80% |",
            f"| ... overhead per row around the model (µs) | {bulk_run['overhead_us_per_row']} "
            "| | | ≤ 50 µs |",
            f"| {small['items']:,} one-text jobs, {CLIENTS} clients (jobs/s) | "
            f"{small['rate_per_s']:.0f} | {naive['rate_per_s']:.0f} naive server | "
            f"{small['rate_per_s'] / naive['rate_per_s']:.2f}x | ≥ 250 jobs/s |",
            f"| ... latency p95 (s) | {small['p95_s']:.2f} | {naive['p95_s']:.2f} | "
            f"{small['p95_s'] / naive['p95_s']:.2f}x | ≤ 0.5 s |",
            f"| `POST /v1/jobs` at {submit['offered_per_s']:.0f}/s offered: p50 / p99 (ms) | "
            f"{submit['p50_ms']} / {submit['p99_ms']} | | | p99 < 50 ms |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--rate", type=float, default=200.0, help="offered POST /v1/jobs per s")
    parser.add_argument("--profile", action="store_true", help="sample worker and API with py-spy")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    result = run(args.rows, args.jobs, args.rate, args.profile)
    result["table"] = table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"pipeline-{result['started']}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
    print(result["table"])


if __name__ == "__main__":
    main()
