"""The client half of the `textq` command: submit, watch and read jobs over HTTP.

Every command talks to a server (`--url`, TEXTQ_URL) with a key (`--api-key`,
TEXTQ_API_KEY), prints a one-line `textq: ...` and exits 1 on an error, and has `--json`
for scripts where it prints a job.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from shared.schemas import JobInsights
from textq.client import Client, InvalidApiKey, Job, JobTimeout, TextqError, is_finished
from textq.failing import fail

UrlOption = Annotated[str, typer.Option("--url", envvar="TEXTQ_URL", help="The textq server.")]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="TEXTQ_API_KEY", help="Your API key.")
]
JobIdArgument = Annotated[str, typer.Argument(help="The job's id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the job as JSON, for scripts.")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Show progress until the job ends.")]
CategoryOption = Annotated[
    list[str],
    typer.Option(
        "--category",
        "-c",
        help="Sentiment: a category to put each text in (repeat for more), e.g. billing.",
    ),
]
InsightsOption = Annotated[
    bool,
    typer.Option(
        "--insights",
        help="Sentiment: count labels per category and summarize the negative feedback.",
    ),
]
DEFAULT_URL = "http://127.0.0.1:8000"
POLL_S = 0.5

stderr = Console(stderr=True)


@contextmanager
def _client(url: str, api_key: str | None) -> Iterator[Client]:
    """A client whose errors end the command with one line."""
    try:
        with Client(url, api_key=api_key or "", retries=3) as client:
            yield client
    except (TextqError, InvalidApiKey) as error:
        raise fail(str(error)) from None
    except JobTimeout as error:
        raise fail(str(error)) from None
    except httpx.TransportError as error:
        raise fail(f"cannot reach {url} ({error})") from None
    except OSError as error:
        raise fail(str(error)) from None


def _print_job(job: Job, as_json: bool) -> None:
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
        return
    progress = job.progress
    typer.echo(
        f"{job.id}  {job.task.value}  {job.status.value}  "
        f"{progress.done + progress.errored}/{progress.total} done"
        + (f", {progress.errored} failed" if progress.errored else "")
    )
    if (note := _waiting_note(job)) is not None:
        typer.echo(note)


def _waiting_note(job: Job) -> str | None:
    """Say so when no live worker serves what an unfinished job waits for."""
    if job.queue is None or job.queue.workers:
        return None
    return f"waiting: no worker runs {job.queue.task.value} with {job.queue.model} yet"


def _watch(client: Client, job: Job) -> Job:
    """Show a live bar (rows done of total, rate, ETA) until the job ends; return it."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, console=stderr, transient=False) as bar:
        row = bar.add_task(f"{job.task.value} {str(job.id)[:8]}", total=job.progress.total, rate="")
        while True:
            done = job.progress.done + job.progress.errored
            elapsed = max(time.monotonic() - started, 1e-9)
            rate = _waiting_note(job) or f"{done / elapsed:,.0f}/s"
            bar.update(row, completed=done, total=job.progress.total, rate=rate)
            if is_finished(job):
                return job
            time.sleep(POLL_S)
            job = client.get(job.id)


def _summary(job: Job) -> None:
    """A table of how the job ended: counts, and the labels of a sentiment job."""
    table = Table(title=f"job {job.id}: {job.status.value}", show_header=True)
    table.add_column("")
    table.add_column("count", justify="right")
    progress = job.progress
    for name, value in (
        ("texts", progress.total),
        ("done", progress.done),
        ("failed", progress.errored),
        ("from cache", progress.cached),
    ):
        table.add_row(name, f"{value:,}")
    for label, count in sorted((job.labels or {}).items()):
        table.add_row(f"label {label}", f"{count:,}")
    stderr.print(table)
    if job.insights is not None:
        _print_insights(job.insights)


def _print_insights(insights: JobInsights) -> None:
    """Tables of a job's insights: labels per category, then each category's complaints."""
    labels = sorted({label for counts in insights.counts.values() for label in counts})
    counts = Table(title="labels per category", show_header=True)
    counts.add_column("category")
    for label in labels:
        counts.add_column(label, justify="right")
    for category in insights.categories:
        row = insights.counts.get(category, {})
        counts.add_row(category, *(f"{row.get(label, 0):,}" for label in labels))
    stderr.print(counts)
    negative = Table(title="negative feedback", show_header=True, show_lines=True)
    negative.add_column("category")
    negative.add_column("texts", justify="right")
    negative.add_column("summary")
    for category in insights.categories:
        entry = insights.negative.get(category)
        if entry is None or entry.count == 0:
            continue
        said = entry.summary or (f"({entry.error})" if entry.error else f"({insights.status})")
        negative.add_row(category, f"{entry.count:,}", said)
    if negative.row_count:
        stderr.print(negative)


def _ended(client: Client, job: Job, *, wait: bool, as_json: bool) -> None:
    if wait:
        job = _watch(client, job)
        if not as_json:
            _summary(job)
    _print_job(job, as_json)
    if wait and job.status.value == "failed":
        raise typer.Exit(1)


def _options(
    pairs: list[str], categories: list[str] | None = None, insights: bool = False
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if categories:
        options["categories"] = categories
    if insights:
        options["insights"] = True
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise fail(f"--option {pair!r} is not name=value")
        try:
            options[name] = json.loads(raw)
        except ValueError:
            options[name] = raw
    return options


def register(app: typer.Typer) -> None:
    """Add the client commands to the `textq` command."""

    @app.command()
    def submit(
        task: Annotated[str, typer.Argument(help="sentiment or summarize.")],
        text: Annotated[str, typer.Argument(help="The text, or a file to read it from.")],
        option: Annotated[
            list[str], typer.Option("--option", "-O", help="A task option, name=value.")
        ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
        priority: Annotated[int | None, typer.Option(help="0-9, higher first.")] = None,
        category: CategoryOption = [],  # noqa: B006 (typer reads the default; it is never mutated)
        insights: InsightsOption = False,
        wait: WaitOption = False,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_URL,
        api_key: KeyOption = None,
    ) -> None:
        """Submit one text, or a file as a long document (never truncated)."""
        path = Path(text)
        is_file = len(text) < 4096 and path.is_file()
        with _client(url, api_key) as client:
            job = client.submit(
                task,
                None if is_file else text,
                document=path.read_text() if is_file else None,
                options=_options(option, category, insights),
                priority=priority,
            )
            _ended(client, job, wait=wait, as_json=as_json)

    @app.command()
    def bulk(
        file: Annotated[Path, typer.Argument(help="A CSV or JSONL file (gzip too).")],
        column: Annotated[str | None, typer.Option(help="The column holding the text.")] = None,
        id_column: Annotated[str | None, typer.Option(help="A column of your own ids.")] = None,
        task: Annotated[str, typer.Option(help="sentiment or summarize.")] = "sentiment",
        option: Annotated[
            list[str], typer.Option("--option", "-O", help="A task option, name=value.")
        ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
        category: CategoryOption = [],  # noqa: B006 (typer reads the default; it is never mutated)
        insights: InsightsOption = False,
        wait: WaitOption = False,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_URL,
        api_key: KeyOption = None,
    ) -> None:
        """Upload a file of feedback as one job, a row per text.

        With --category (repeated) each row is put in the nearest category; with
        --insights the job also counts labels per category and summarizes the negative
        feedback of each, shown at the end with --wait.
        """
        with _client(url, api_key) as client:
            job = client.upload_batch(
                file,
                task=task,
                text_column=column,
                id_column=id_column,
                options=_options(option, category, insights),
            )
            _ended(client, job, wait=wait, as_json=as_json)

    @app.command()
    def status(
        job_id: JobIdArgument,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_URL,
        api_key: KeyOption = None,
    ) -> None:
        """Show where a job is."""
        with _client(url, api_key) as client:
            _print_job(client.get(job_id), as_json)

    @app.command()
    def results(
        job_id: JobIdArgument,
        format: Annotated[str, typer.Option(help="jsonl or csv.")] = "jsonl",
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write here, not to stdout.")
        ] = None,
        url: UrlOption = DEFAULT_URL,
        api_key: KeyOption = None,
    ) -> None:
        """Write a finished job's results as JSON lines or CSV."""
        if format not in ("jsonl", "csv"):
            raise fail(f"--format must be jsonl or csv, not {format!r}")
        with _client(url, api_key) as client:
            chunks = client.export(job_id, format=format)
            if output is None:
                _copy(chunks, sys.stdout.buffer.write)
                sys.stdout.flush()
            else:
                with output.open("wb") as handle:
                    _copy(chunks, handle.write)

    @app.command()
    def cancel(
        job_id: JobIdArgument,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_URL,
        api_key: KeyOption = None,
    ) -> None:
        """Cancel a job: what has not run yet never will."""
        with _client(url, api_key) as client:
            _print_job(client.cancel(job_id), as_json)

    @app.command()
    def jobs(
        status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
        limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
        as_json: JsonOption = False,
        url: UrlOption = DEFAULT_URL,
        api_key: KeyOption = None,
    ) -> None:
        """List your newest jobs."""
        with _client(url, api_key) as client:
            found = client.jobs(status=status, limit=limit)
        if as_json:
            typer.echo(json.dumps([job.model_dump(mode="json") for job in found], indent=2))
            return
        for job in found:
            _print_job(job, as_json=False)


def _copy(chunks: Iterator[bytes], write: Callable[[bytes], object]) -> None:
    for chunk in chunks:
        write(chunk)
