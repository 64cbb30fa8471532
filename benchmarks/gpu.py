"""On a GPU: the models alone, then textq end to end on the embedded default, side by side.

    python -m benchmarks.gpu [--device cuda:0] [--texts 50000] [--articles 64] [--smoke]

Builds the full-size distilbert classifier and distilbart-cnn-12-6 with random weights
(speed does not depend on the weights), runs each alone through textq's own runners
(length-sorted batches, the device's fastest safe dtype, no database), then starts `textq up`
(SQLite and the file broker: no servers needed) on the same device and runs the same texts
as a bulk CSV through `/v1/batches` and the same articles as one summarization job. Prints
texts/s, the end-to-end / model-alone ratio and the GPU's mean utilisation in each phase
(from nvidia-smi), and writes the figures as JSON (to $OUT too, where that is set). Sized to
finish within 8 minutes on one H100/H200. `--smoke` runs the same steps with the tiny test
models and a few texts, on any device, to prove the script works before a GPU is at hand.

Needs only the project's own dependencies plus the corpora in TEXTQ_BENCH_DATA; see the
README's "A GPU run" for carrying them to a machine without network.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import data
from benchmarks.run import RESULTS, WORK, machine
from tests.e2e.processes import free_port, start, wait_until_ready

SUMMARY_TOKENS = 64  # fixed output length (min = max), so the two phases compare


class GpuSampler(threading.Thread):
    """Sample the GPU's utilisation (%) every half second with nvidia-smi, until stopped."""

    def __init__(self, device: str) -> None:
        super().__init__(daemon=True)
        self.index = device.split(":")[1] if ":" in device else "0"
        self.samples: list[float] = []
        self.stopping = threading.Event()
        self.smi = shutil.which("nvidia-smi") if device.startswith("cuda") else None

    def run(self) -> None:
        while self.smi and not self.stopping.wait(0.5):
            read = subprocess.run(
                [self.smi, "-i", self.index, "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if read.returncode == 0 and read.stdout.strip().isdigit():
                self.samples.append(float(read.stdout.strip()))

    def __enter__(self) -> GpuSampler:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.join()

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self.samples), 1) if self.samples else None


def models(smoke: bool) -> dict[str, Path]:
    """Return the sentiment and summarization model directories, built if missing."""
    if smoke:
        from tests.model_factory import build_sentiment_model, build_summarization_model

        return {
            "sentiment": build_sentiment_model(WORK / "tiny-sentiment"),
            "summarize": build_summarization_model(WORK / "tiny-summarize"),
        }
    from benchmarks.models import distilbart_cnn, distilbert_classifier

    return {
        "sentiment": distilbert_classifier(WORK / "distilbert-base-sst2"),
        "summarize": distilbart_cnn(WORK / "distilbart-cnn-12-6"),
    }


def model_alone(
    model_dirs: dict[str, Path], device_name: str, texts: list[str], articles: list[str]
) -> dict[str, Any]:
    """Time textq's runners alone (no database, no HTTP) on the texts and the articles, and
    the chunks of those longer than the model's window."""
    from benchmarks.modelonly import chunk_items
    from shared.config import Settings
    from shared.jobs.work import ClaimedItem
    from shared.states import Task
    from worker import model_registry
    from worker.engine import BatchLimits, make_runner

    settings = Settings()
    device = model_registry.pick_device(device_name)
    dtype = model_registry.pick_dtype("auto", device)
    out: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch.")}
    job = uuid.uuid4()
    summary_options = {"max_length": SUMMARY_TOKENS, "min_length": SUMMARY_TOKENS}
    for task, inputs, options, size in (
        (Task.SENTIMENT, texts, {}, settings.max_batch_size),
        (Task.SUMMARIZE, articles, summary_options, settings.summarize_max_batch_size),
    ):
        path = model_dirs[task.value]
        resolved = model_registry.ResolvedModel(
            task=task, source=str(path), path=path, revision="bench"
        )
        loaded = model_registry.load(resolved, device=device, dtype=dtype)
        runner = make_runner(
            loaded, BatchLimits(settings.max_batch_tokens, size, settings.batch_overhead_tokens)
        )
        items = [
            ClaimedItem(id=n, job_id=job, index=n, text=t, options=options)
            for n, t in enumerate(inputs)
        ]
        for _ in runner.run(items[: size * 2]):  # warm up: kernels, allocator
            pass
        synchronize(device)
        # The chunks of texts longer than the window run too, as the worker runs them.
        chunks = chunk_items(items, [o for group in runner.prepare(items).decided for o in group])
        with GpuSampler(device_name) as gpu:
            started = time.perf_counter()
            for _ in runner.run(items):
                pass
            for _ in runner.run(chunks):
                pass
            synchronize(device)
            elapsed = time.perf_counter() - started
        out[task.value] = {"per_s": len(inputs) / elapsed, "gpu_util_pct": gpu.mean}
        del runner, loaded
    return out


def synchronize(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def end_to_end(
    model_dirs: dict[str, Path], device: str, texts: list[str], articles: list[str], logs: Path
) -> dict[str, Any]:
    """Run the texts as a bulk CSV and the articles as one job through `textq up`."""
    data_dir = WORK / "gpu-embedded"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    env = {
        "TEXTQ_DATA_DIR": str(data_dir),
        "TEXTQ_DEVICE": device,
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs["sentiment"]),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs["summarize"]),
        "TEXTQ_RESULT_CACHE": "false",
        "TEXTQ_MAX_ITEMS_PER_JOB": str(max(len(texts), 10_000)),
        "TEXTQ_LOG_LEVEL": "WARNING",
    }
    up = start("up", ["up", "--port", str(port)], env, logs)
    base = f"http://127.0.0.1:{port}"
    csv_path = WORK / "gpu-feedback.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["comment"])
        writer.writerows([text] for text in texts)
    out: dict[str, Any] = {}
    try:
        wait_until_ready(base, [up], timeout_s=600)
        with httpx.Client(base_url=base, timeout=None) as client:
            warm = {"task": "sentiment", "input": {"texts": texts[:256]}}
            wait(client, client.post("/v1/jobs", json=warm).raise_for_status().json())
            warm = {"task": "summarize", "input": {"texts": articles[:2]}}
            wait(client, client.post("/v1/jobs", json=warm).raise_for_status().json())
            with GpuSampler(device) as gpu, csv_path.open("rb") as file:
                started = time.perf_counter()
                job = (
                    client.post(
                        "/v1/batches",
                        files={"file": (csv_path.name, file, "text/csv")},
                        data={"task": "sentiment", "text_column": "comment"},
                    )
                    .raise_for_status()
                    .json()
                )
                done = wait(client, job)
                elapsed = time.perf_counter() - started
            assert done["progress"]["done"] == len(texts), done
            out["sentiment"] = {"per_s": len(texts) / elapsed, "gpu_util_pct": gpu.mean}
            options = {"max_length": SUMMARY_TOKENS, "min_length": SUMMARY_TOKENS}
            with GpuSampler(device) as gpu:
                started = time.perf_counter()
                body = {"task": "summarize", "input": {"texts": articles}, "options": options}
                done = wait(client, client.post("/v1/jobs", json=body).raise_for_status().json())
                elapsed = time.perf_counter() - started
            assert done["progress"]["done"] == len(articles), done
            out["summarize"] = {"per_s": len(articles) / elapsed, "gpu_util_pct": gpu.mean}
    finally:
        up.stop()
        csv_path.unlink(missing_ok=True)
    return out


def wait(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """Long-poll a job until it ends; return it (raise unless it succeeded)."""
    while job["status"] in ("queued", "running"):
        job = client.get(f"/v1/jobs/{job['id']}", params={"wait_s": 30}).raise_for_status().json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job}")
    return job


def table(result: dict[str, Any]) -> str:
    """Return the run as markdown: each task end to end beside the model alone."""
    rows = [
        f"| {result['device_name']}, {result['alone']['dtype']} | model alone | end to end "
        "| end to end / alone | GPU busy (alone / end to end) | target |",
        "|---|---|---|---|---|---|",
    ]
    for task, unit, target in (
        ("sentiment", f"bulk sentiment, {result['texts']:,} texts (texts/s)", ">= 80%"),
        ("summarize", f"summarize {result['articles']} articles (docs/s)", ""),
    ):
        alone, e2e = result["alone"][task], result["end_to_end"][task]
        rows.append(
            f"| {unit} | {alone['per_s']:,.1f} | {e2e['per_s']:,.1f} | "
            f"{e2e['per_s'] / alone['per_s']:.0%} | {percent(alone['gpu_util_pct'])} / "
            f"{percent(e2e['gpu_util_pct'])} | {target} |"
        )
    return "\n".join(rows)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} %"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    return machine()["cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--articles", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="tiny models, a few texts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    texts_count, articles_count = (400, 4) if args.smoke else (args.texts, args.articles)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = WORK / f"logs-gpu-{stamp}"
    model_dirs = models(args.smoke)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dirs["summarize"])
    texts = data.feedback(texts_count)
    if args.smoke:  # its steps, not its inputs, are what a smoke run proves: no corpus needed
        articles = [" ".join(texts[n * 20 : (n + 1) * 20]) for n in range(articles_count)]
    else:
        articles = data.news_articles(articles_count, tokenizer=tokenizer)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "when": stamp,
        "machine": machine(),
        "device": args.device,
        "device_name": device_name(args.device),
        "texts": texts_count,
        "articles": articles_count,
        "smoke": args.smoke,
    }
    result["alone"] = model_alone(model_dirs, args.device, texts, articles)
    result["end_to_end"] = end_to_end(model_dirs, args.device, texts, articles, logs)
    result["duration_s"] = round(time.perf_counter() - started)
    result["table"] = table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = json.dumps(result, indent=2) + "\n"
    (RESULTS / f"gpu-{stamp}.json").write_text(written)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "gpu.json").write_text(written)
    print(written)
    print(result["table"])


if __name__ == "__main__":
    main()
