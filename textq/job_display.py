"""How the `textq` command shows a job to people, on stderr: the live bar, then how it ended
(counts, insights, and the first results, numbered by their API `index`).

Everything here goes to stderr, so stdout holds only what scripts read (the job, the
results). Text that came from users or models is printed as it is, never as markup.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

import httpx
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
from rich.text import Text

from shared.schemas import JobInsights, QueueRead
from shared.schemas import Progress as JobProgress
from shared.states import JobStatus, Task
from textq.client import Client, Job, TextqError, is_finished

POLL_S = 0.5
# A job of up to this many texts shows them all at the end; a bigger one shows this many
# first ones and how to get the rest (its label counts are the digest of the whole).
SHOWN_RESULTS = 5

stderr = Console(stderr=True)


def _line(text: str) -> None:
    """Print one line as it is: never wrapped (ids stay whole), never read as markup."""
    stderr.print(Text(text), soft_wrap=True)


def waiting_note(job: Job) -> str | None:
    """Say so when no live worker serves what an unfinished job waits for."""
    if job.queue is None or job.queue.workers:
        return None
    queue = job.queue
    if queue.model_name is None:  # a job from before the catalogue: its source is all it has
        return f"waiting: no worker runs {queue.task.value} with {queue.model} yet"
    return (
        f"waiting: no worker serves the {queue.task.value} model {queue.model_name} "
        f"({queue.model}) yet"
    )


def watch(client: Client, job: Job) -> Job:
    """Show a live bar (items done of total, rate, ETA) until the job ends; return it.

    The job's whole id comes first, on a line of its own: it is what `textq status` takes.
    Once the job has long texts split in chunks (`progress.chunks.total` > 0, e.g. a
    document, which is one text), a second bar counts those chunks, which move while the
    texts bar waits for a whole text.
    """
    total = job.progress.total
    _line(f"job {job.id}: {job.task.value}, {total:,} text{'' if total == 1 else 's'}")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    updates = follow(client, job)
    with Progress(*columns, console=stderr, transient=False) as bar:
        row = bar.add_task(job.task.value, total=job.progress.total, rate="")
        chunk_row = None
        while True:
            done = job.progress.done + job.progress.errored
            elapsed = max(time.monotonic() - started, 1e-9)
            rate = waiting_note(job) or _per_s(done / elapsed)
            bar.update(row, completed=done, total=job.progress.total, rate=rate)
            chunks = job.progress.chunks
            if chunks.total:
                if chunk_row is None:
                    chunk_row = bar.add_task("chunks", total=chunks.total, rate="")
                chunk_rate = _per_s(chunks.done / elapsed)
                bar.update(chunk_row, completed=chunks.done, total=chunks.total, rate=chunk_rate)
            if is_finished(job):
                return job
            job = next(updates)


def follow(client: Client, job: Job) -> Iterator[Job]:
    """Yield the job each time its figures change, until it has ended (read whole then).

    Follows the job's event stream, resuming it with the last event's id if it drops; where
    no stream can be had (an older server, a proxy in the way), polls every `POLL_S`.
    """
    last_id: str | None = None
    try:
        while not is_finished(job):
            heard = False
            for name, data, event_id in client.events(job.id, last_event_id=last_id):
                last_id, heard = event_id, True
                if name in ("progress", "finished"):
                    job = _with_figures(job, data)
                    # An ended job is yielded once, read whole: events carry only its figures,
                    # not its labels and insights.
                    if name == "progress" and not is_finished(job):
                        yield job
            # The stream ended: at `finished`, or dropped (then resume where it stopped).
            job = client.get(job.id)
            yield job
            if not heard:  # a stream that ends at once is no stream: poll instead
                break
    except (httpx.HTTPError, TextqError, ValueError):
        pass
    while not is_finished(job):
        time.sleep(POLL_S)
        job = client.get(job.id)
        yield job


def _with_figures(job: Job, data: dict[str, Any]) -> Job:
    """Return the job with an event's status, progress and queue."""
    return job.model_copy(
        update={
            "status": JobStatus(data["status"]),
            "progress": JobProgress.model_validate(data["progress"]),
            "queue": QueueRead.model_validate(data["queue"]) if data.get("queue") else None,
        }
    )


def _per_s(rate: float) -> str:
    """Texts per second, with a decimal while there are few (a slow job is not `0/s`)."""
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"


def show_end(client: Client, job: Job) -> None:
    """Show how a finished job ended: counts and labels, insights, then its first results."""
    _line(f"job {job.id}: {job.status.value}")
    table = Table(show_header=True)
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
    if progress.chunks.total:  # long texts: the pieces they were summarized or labelled in
        table.add_row("chunks", f"{progress.chunks.done:,} of {progress.chunks.total:,}")
    for label, count in sorted((job.labels or {}).items()):
        table.add_row(Text(f"label {label}"), f"{count:,}")
    stderr.print(table)
    if job.insights is not None:
        _print_insights(job.insights)
    _print_results(client, job)


def _print_results(client: Client, job: Job) -> None:
    """Print the job's first results: a table of labels, or each summary as a paragraph."""
    try:
        rows = list(islice(client.results(job.id, page_size=SHOWN_RESULTS), SHOWN_RESULTS))
    except TextqError as error:
        _line(f"results: {error}")
        return
    if not rows:
        _line("no results")
        return
    if job.task is Task.SENTIMENT:
        stderr.print(_sentiment_table(rows))
    else:
        for row in rows:
            _print_summary(row)
    left = job.progress.total - len(rows)
    if left > 0:
        _line(f"… and {left:,} more: `textq results {job.id}` prints them all")


def _sentiment_table(rows: list[dict[str, Any]]) -> Table:
    """A table of sentiment results; columns that no row fills are left out."""
    columns = [
        ("index", "index"),
        ("custom_id", "custom_id"),
        ("label", "label"),
        ("score", "score"),
        ("category", "category"),
        ("error", "error"),
    ]
    shown = [(name, key) for name, key in columns if any(row.get(key) is not None for row in rows)]
    table = Table(show_header=True)
    for name, _ in shown:
        table.add_column(name, justify="right" if name in ("index", "score") else "left")
    for row in rows:
        table.add_row(*(_cell(row.get(key), key) for _, key in shown))
    return table


def _cell(value: Any, key: str) -> Text:
    if value is None:
        return Text("")
    if key == "score":
        return Text(f"{value:.3f}")
    return Text(str(value))


def _print_summary(row: dict[str, Any]) -> None:
    """Print one summary (or why it failed) under its index, unwrapped so it copies whole."""
    name = f"index {row['index']}" + (
        f", custom_id {row['custom_id']}" if "custom_id" in row else ""
    )
    if row.get("error"):
        _line(f"{name}: failed: {row['error']}")
        return
    _line(f"{name}:")
    _line(row.get("summary_text") or "")


def _print_insights(insights: JobInsights) -> None:
    """Tables of a job's insights: labels per category, then each category's complaints."""
    labels = sorted({label for counts in insights.counts.values() for label in counts})
    counts = Table(title="labels per category", show_header=True)
    counts.add_column("category")
    for label in labels:
        counts.add_column(Text(label), justify="right")
    for category in insights.categories:
        row = insights.counts.get(category, {})
        counts.add_row(Text(category), *(f"{row.get(label, 0):,}" for label in labels))
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
        negative.add_row(Text(category), f"{entry.count:,}", Text(said))
    if negative.row_count:
        stderr.print(negative)
