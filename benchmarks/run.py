"""Run every benchmark: the naive seed server and textq, side by side, in one script.

    python -m benchmarks.run [--quick] [--only bulk,small,summarize,model,memory,pipeline]

Writes benchmarks/results/<time>.json and latest.json, prints a markdown table with the
ratios, and puts that table in the README between the bench markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks import data, loadgen, modelonly
from benchmarks.models import distilbart_cnn, distilbert_classifier
from shared.migrate import upgrade
from tests import services
from tests.e2e.processes import Process, free_port, start, start_command, wait_until_ready
from tests.model_factory import build_sentiment_model, tokenizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / ".work"
SUMMARY_TOKENS = 64  # fixed output length: min_length = max_length, so runs compare
CLIENTS_BULK = 4
CLIENTS_SMALL = 50
CLIENTS_SUMMARIZE = 40  # every article submitted at once, as a batch of work is


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "bf16_cpu": "avx512_bf16" in Path("/proc/cpuinfo").read_text(),
    }


@contextmanager
def naive_server(models: dict[str, Path], logs: Path) -> Iterator[str]:
    port = free_port()
    server = start_command(
        "naive",
        [
            "-m",
            "benchmarks.naive_server",
            str(models["sentiment"]),
            str(models["summarize"]),
            str(port),
        ],
        {},
        logs,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, [server], timeout_s=300)
        yield base
    finally:
        server.stop()


def postgres_service_env(extra_env: dict[str, str]) -> tuple[str, int, dict[str, str]]:
    """Create a migrated database of the run's own; return it, a free port and textq's env."""
    url = services.create_postgres_database(prefix="textq_bench")
    services.redis_client()
    upgrade(url)
    port = free_port()
    env = {
        "TEXTQ_DATABASE_URL": url,
        "TEXTQ_BROKER_URL": services.REDIS_URL,
        "TEXTQ_QUEUE_PREFIX": f"textq-bench-{port}",
        "TEXTQ_DATA_DIR": str(WORK / "data"),
        "TEXTQ_LOG_LEVEL": "WARNING",
        # Throughput is measured here, not key checks: one tenant, no keys, on loopback.
        "TEXTQ_AUTH": "off",
    } | extra_env
    return url, port, env


@contextmanager
def textq_service(
    models: dict[str, Path], logs: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, Process]]:
    """textq api + textq worker on Postgres and Redis, in a database of the run's own."""
    url, port, env = postgres_service_env(
        {
            "TEXTQ_SENTIMENT_MODEL": str(models["sentiment"]),
            "TEXTQ_SUMMARIZATION_MODEL": str(models["summarize"]),
            "TEXTQ_MAX_ITEMS_PER_JOB": "100000",
        }
        | (extra_env or {})
    )
    api = start("api", ["api", "--port", str(port)], env, logs)
    worker = start("worker", ["worker", "--device", "cpu"], env, logs)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, [api, worker], timeout_s=300)
        yield base, worker
    finally:
        worker.stop()
        api.stop()
        services.drop_postgres_database(url)


def warm_up(base: str, tasks: list[str]) -> None:
    """Run a job per task so model loading is not timed."""
    bodies = [{"task": task, "input": {"text": "warm up " * 20}} for task in tasks]
    loadgen.run_jobs(base, bodies, clients=len(bodies))


def worker_peak_rss_mb(worker: Process) -> float:
    """Return the peak resident memory of the worker process (it holds the models)."""
    status = Path(f"/proc/{worker.popen.pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


def summarize_body(text: str) -> dict[str, Any]:
    return {"text": text, "max_length": SUMMARY_TOKENS, "min_length": SUMMARY_TOKENS}


def end_to_end(models: dict[str, Path], scale: float, only: set[str], logs: Path) -> dict:
    tok = tokenizer()
    bulk_texts = data.feedback(int(5000 * scale))
    small_texts = data.feedback(int(2000 * scale), seed=1)
    articles = data.news_articles(max(4, int(40 * scale)), tokenizer=tok)
    out: dict[str, dict[str, Any]] = {}

    with naive_server(models, logs) as base:
        loadgen.run_requests(base, "/analyze", [{"text": "warm"}], clients=1)
        if "bulk" in only:
            bodies = [{"text": t} for t in bulk_texts]
            out["bulk"] = {
                "naive": loadgen.run_requests(
                    base, "/analyze", bodies, clients=CLIENTS_BULK
                ).summary()
            }
        if "small" in only:
            bodies = [{"text": t} for t in small_texts]
            out["small"] = {
                "naive": loadgen.run_requests(
                    base, "/analyze", bodies, clients=CLIENTS_SMALL
                ).summary()
            }
        if "summarize" in only:
            bodies = [summarize_body(a) for a in articles]
            out["summarize"] = {
                "naive": loadgen.run_requests(
                    base, "/summarize", bodies, clients=CLIENTS_SUMMARIZE
                ).summary()
            }

    with textq_service(models, logs) as (base, worker):
        warm_up(base, ["sentiment", "summarize"])
        if "bulk" in only:
            body = {"task": "sentiment", "input": {"texts": bulk_texts}}
            out["bulk"]["textq"] = loadgen.run_jobs(base, [body], clients=1).summary()
            out["bulk"]["textq"]["worker_peak_rss_mb"] = round(worker_peak_rss_mb(worker))
        if "small" in only:
            bodies = [{"task": "sentiment", "input": {"text": t}} for t in small_texts]
            out["small"]["textq"] = loadgen.run_jobs(base, bodies, clients=CLIENTS_SMALL).summary()
        if "summarize" in only:
            options = {"max_length": SUMMARY_TOKENS, "min_length": SUMMARY_TOKENS}
            bodies = [
                {"task": "summarize", "input": {"text": a}, "options": options} for a in articles
            ]
            out["summarize"]["textq"] = loadgen.run_jobs(
                base, bodies, clients=CLIENTS_SUMMARIZE
            ).summary()
    return out


def memory(scale: float, logs: Path) -> dict[str, Any]:
    """Peak worker RSS for a small and a 10x larger job (tiny model: memory, not speed)."""
    tiny = {
        "sentiment": build_sentiment_model(WORK / "tiny-sentiment"),
        "summarize": WORK / "unused",
    }
    peaks = {}
    for items in (int(5000 * scale), int(50000 * scale)):
        with textq_service(tiny, logs, {"TEXTQ_WORKER_TASKS": "sentiment"}) as (base, worker):
            warm_up(base, ["sentiment"])
            body = {"task": "sentiment", "input": {"texts": data.feedback(items, seed=2)}}
            run = loadgen.run_jobs(base, [body], clients=1)
            peaks[str(items)] = {
                "peak_rss_mb": round(worker_peak_rss_mb(worker), 1),
                "rate_per_s": round(run.rate, 1),
            }
    return peaks


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(result: dict[str, Any]) -> str:
    rows = [
        "| full-size model | naive | textq | textq / naive | target |",
        "|---|---|---|---|---|",
    ]
    e2e = result.get("end_to_end", {})
    if "bulk" in e2e:
        n, t = e2e["bulk"]["naive"], e2e["bulk"]["textq"]
        rows.append(
            f"| bulk sentiment, {t['items']} texts (texts/s) | {n['rate_per_s']:.1f} | "
            f"{t['rate_per_s']:.1f} | {ratio(t['rate_per_s'], n['rate_per_s'])} | >= 4x |"
        )
    if "small" in e2e:
        n, t = e2e["small"]["naive"], e2e["small"]["textq"]
        rows.append(
            f"| {t['items']} one-text jobs, {CLIENTS_SMALL} clients (jobs/s) | "
            f"{n['rate_per_s']:.1f} | {t['rate_per_s']:.1f} | "
            f"{ratio(t['rate_per_s'], n['rate_per_s'])} | >= 3x |"
        )
        for q in (50, 95, 99):
            rows.append(
                f"| ... latency p{q} (s) | {n[f'p{q}_s']:.2f} | {t[f'p{q}_s']:.2f} | "
                f"{ratio(t[f'p{q}_s'], n[f'p{q}_s'])} | p95 <= 1x |"
            )
    if "summarize" in e2e:
        n, t = e2e["summarize"]["naive"], e2e["summarize"]["textq"]
        rows.append(
            f"| summarize {t['items']} news articles (docs/s) | {n['rate_per_s']:.3f} | "
            f"{t['rate_per_s']:.3f} | {ratio(t['rate_per_s'], n['rate_per_s'])} | >= 3x |"
        )
    if "model" in result:
        m = result["model"]
        rows.append(
            f"| model only, sentiment fp32 / bf16 (texts/s) | {m['fp32']['texts_per_s']:.1f} "
            f"| {m['bf16']['texts_per_s']:.1f} | "
            f"{ratio(m['bf16']['texts_per_s'], m['fp32']['texts_per_s'])} | |"
        )
        rows.append(
            f"| model only bf16: achieved / matmul peak (GFLOP/s) | "
            f"{m['peak_gflops']['bfloat16']:.0f} peak | "
            f"{m['bf16']['gflops']:.0f} | {m['bf16']['gflops'] / m['peak_gflops']['bfloat16']:.0%} "
            "| >= 60% |"
        )
    if "model" in result and "bulk" in e2e:
        # Against the dtype the worker ran in: bf16 only where the CPU computes it natively.
        dtype = result["model"].get("worker_dtype", "bf16")
        alone, bulk = result["model"][dtype]["texts_per_s"], e2e["bulk"]["textq"]["rate_per_s"]
        rows.append(
            f"| bulk end to end / model alone {dtype}, same texts (texts/s) | {alone:.1f} | "
            f"{bulk:.1f} | {bulk / alone:.0%} | >= 95% |"
        )
    if "memory" in result:
        small, large = list(result["memory"].values())
        rows.append(
            f"| worker peak RSS, {next(iter(result['memory']))} vs {list(result['memory'])[1]} "
            f"items (MB) | {small['peak_rss_mb']:.0f} | {large['peak_rss_mb']:.0f} | "
            f"{ratio(large['peak_rss_mb'], small['peak_rss_mb'])} | <= 1.1x |"
        )
    if "pipeline" in result:
        from benchmarks import pipeline  # it builds on this module's services

        rows += ["", pipeline.table(result["pipeline"])]
    return "\n".join(rows)


def update_readme(markdown: str, marker: str = "bench") -> None:
    """Put `markdown` in the README between the `<marker>:start` and `:end` comments."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"<!-- {marker}:start -->\n{markdown}\n<!-- {marker}:end -->"
    pattern = rf"<!-- {marker}:start -->.*<!-- {marker}:end -->"
    text = re.sub(pattern, lambda _: block, text, flags=re.S)
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of each workload")
    parser.add_argument("--only", default="bulk,small,summarize,model,memory,pipeline")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scale = 0.1 if args.quick else 1.0
    only = set(args.only.split(","))
    WORK.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = WORK / f"logs-{stamp}"
    models = {
        "sentiment": distilbert_classifier(WORK / "distilbert-base-sst2"),
        "summarize": distilbart_cnn(WORK / "distilbart-cnn-12-6"),
    }
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "scale": scale, "started": stamp}
    if only & {"bulk", "small", "summarize"}:
        result["end_to_end"] = end_to_end(models, scale, only, logs)
    if "model" in only:
        result["model"] = modelonly.run(models["sentiment"], data.feedback(int(5000 * scale)))
    if "memory" in only:
        result["memory"] = memory(scale, logs)
    if "pipeline" in only:
        from benchmarks import pipeline

        result["pipeline"] = pipeline.run(
            rows=int(pipeline.ROWS * scale), jobs=int(pipeline.JOBS * scale), rate=200.0
        )
    result["duration_s"] = round(time.perf_counter() - started)
    markdown = table(result)
    result["table"] = markdown
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in (f"{stamp}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    described = (
        f"{markdown}\n\nMeasured {stamp} on {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gb']} GB), torch {m['torch']}, scale {scale}, in {result['duration_s']} s."
    )
    print(described)
    if not args.no_readme and not args.quick:
        update_readme(described)


if __name__ == "__main__":
    main()
