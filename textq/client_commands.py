"""The client half of the `textq` command: submit, watch and read jobs over HTTP.

Every command talks to a server (`--url`, TEXTQ_URL, else where TEXTQ_API_HOST and
TEXTQ_API_PORT put `textq api`) with a key (`--api-key`, TEXTQ_API_KEY), prints a one-line
`textq: ...` on stderr and exits 1 on an error, says so on stderr when an answer is empty,
stops quietly with status 141 when the reader of its stdout goes away (`| head`), as a
Unix tool killed by SIGPIPE does, and has `--json` for scripts.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from textq.client import Client, InvalidApiKey, Job, JobTimeout, TextqError
from textq.failing import fail, quiet_on_closed_pipe, settings_or_fail
from textq.job_display import show_end, waiting_note, watch
from textq.server_address import default_url

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TEXTQ_URL",
        help="The textq server \\[default: http://TEXTQ_API_HOST:TEXTQ_API_PORT, where "
        "`textq api` listens, so http://127.0.0.1:8000].",
        show_default=False,
    ),
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="TEXTQ_API_KEY", help="Your API key.")
]
JobIdArgument = Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the job as JSON, for scripts.")]
JsonListOption = Annotated[
    bool, typer.Option("--json", help="Print the jobs as one JSON list, for scripts.")
]
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
TextOption = Annotated[
    list[str],
    typer.Option(
        "--text",
        help="A text itself, even if it looks like a file name; repeat it for a job of "
        "several texts.",
    ),
]
# A name with an extension (a letter in it) or a path separator, and no spaces: a text like
# that is far more likely a mistyped file than something to send.
LOOKS_LIKE_A_PATH = re.compile(r"^(?=\S+$)(?:.*/.*|.*\.[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*)$")
MAX_PATH_CHARS = 4096
JOBS_PER_PAGE = 20


def _server(url: str | None) -> str:
    """Return --url / TEXTQ_URL, else where the server's own settings make it listen."""
    if url:
        return url
    settings = settings_or_fail(hint="or give the server with --url or TEXTQ_URL")
    return default_url(settings)


@contextmanager
def _client(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client whose errors end the command with one line."""
    url = _server(url)
    try:
        with Client(url, api_key=api_key or "", retries=3) as client:
            yield client
    except BrokenPipeError:
        raise  # the reader of stdout went away: quiet_on_closed_pipe ends the command
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
    revision = job.model_revision or "not started"
    typer.echo(f"model {job.model_name or job.model}: {job.model} @ {revision}")
    if (note := waiting_note(job)) is not None:
        typer.echo(note)


def _job_id(value: str) -> str:
    """Return a job id as given, or end the command saying what a job id looks like."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise fail(
            f"{value!r} is not a job id: a job id has 36 characters, e.g. "
            "0b9f3c2e-6a1d-4f8e-9c7b-2d5e8a1f4c3b, as `textq submit` and `textq jobs` print it"
        ) from None


def _text_or_document(
    argument: str | None, texts: list[str]
) -> tuple[list[str] | None, str | None]:
    """Return (texts, document): every `--text` as it is, in order, or the argument read as a
    file if it names one, else as the one text; a missing file that looks like one is an
    error, and so is an argument with `--text` or neither."""
    if (argument is None) == (not texts):
        raise fail(
            "give the text as an argument or with --text, not both"
            if argument is not None
            else "give a text, a file to read it from, or --text TEXT (repeat for more)"
        )
    if argument is None:
        return texts, None
    path = Path(argument)
    try:
        exists = len(argument) <= MAX_PATH_CHARS and path.exists()
    except (OSError, ValueError):
        exists = False  # too long a name, or a NUL in it: a text, not a path
    send_as_text = f"to send it as the text itself, use --text {shlex.quote(argument)}"
    if not exists:
        if LOOKS_LIKE_A_PATH.match(argument):
            raise fail(f"{argument}: no such file; {send_as_text}")
        return [argument], None
    if path.is_dir():
        raise fail(f"{argument} is a directory, not a file; {send_as_text}")
    try:
        return None, path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise fail(
            f"{argument} is not UTF-8 text (byte {error.start}); give a plain-text file"
        ) from None
    except OSError as error:
        raise fail(f"cannot read {argument}: {error.strerror or error}") from None


def _ended(client: Client, job: Job, *, wait: bool, as_json: bool) -> None:
    if wait:
        job = watch(client, job)
        if not as_json:
            show_end(client, job)
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


ModelOption = Annotated[
    str | None,
    typer.Option(
        help="The catalogue model to run (GET /v1/models lists them); default: the task's."
    ),
]


@quiet_on_closed_pipe
def submit(
    task: Annotated[str, typer.Argument(metavar="TASK", help="sentiment or summarize.")],
    text_or_file: Annotated[
        str | None,
        typer.Argument(
            metavar="TEXT_OR_FILE",
            help="The text, or a file to read it from (sent as a long document).",
        ),
    ] = None,
    text: TextOption = [],  # noqa: B006 (typer reads the default; it is never mutated)
    option: Annotated[
        list[str], typer.Option("--option", "-O", help="A task option, name=value.")
    ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    priority: Annotated[int | None, typer.Option(help="0-9, higher first.")] = None,
    model: ModelOption = None,
    category: CategoryOption = [],  # noqa: B006 (typer reads the default; it is never mutated)
    insights: InsightsOption = False,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Submit one text, several (--text, repeated), or a file as a long document (never truncated).

    An argument that looks like a file (a name with an extension, or a path) must be one; send such words as the text itself with --text.
    """  # noqa: E501 (rich help keeps a paragraph's line breaks, so each is one line)
    texts, document = _text_or_document(text_or_file, text)
    with _client(url, api_key) as client:
        job = client.submit(
            task,
            texts=texts,
            document=document,
            options=_options(option, category, insights),
            priority=priority,
            model=model,
        )
        _ended(client, job, wait=wait, as_json=as_json)


@quiet_on_closed_pipe
def bulk(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A CSV or JSONL file (gzip too).")],
    column: Annotated[str | None, typer.Option(help="The column holding the text.")] = None,
    id_column: Annotated[str | None, typer.Option(help="A column of your own ids.")] = None,
    task: Annotated[str, typer.Option(help="sentiment or summarize.")] = "sentiment",
    model: ModelOption = None,
    option: Annotated[
        list[str], typer.Option("--option", "-O", help="A task option, name=value.")
    ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    category: CategoryOption = [],  # noqa: B006 (typer reads the default; it is never mutated)
    insights: InsightsOption = False,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Upload a file of feedback as one job, a row per text.

    With --category (repeated) each row is put in the nearest category; with --insights the job also counts labels per category and summarizes the negative feedback of each, shown at the end with --wait.
    """  # noqa: E501 (rich help keeps a paragraph's line breaks, so each is one line)
    if not file.is_file():
        raise fail(f"{file}: " + ("a directory, not a file" if file.is_dir() else "no such file"))
    with _client(url, api_key) as client:
        job = client.upload_batch(
            file,
            task=task,
            text_column=column,
            id_column=id_column,
            options=_options(option, category, insights),
            model=model,
        )
        _ended(client, job, wait=wait, as_json=as_json)


@quiet_on_closed_pipe
def status(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Show where a job is."""
    with _client(url, api_key) as client:
        _print_job(client.get(_job_id(job_id)), as_json)


@quiet_on_closed_pipe
def results(
    job_id: JobIdArgument,
    format: Annotated[str, typer.Option(help="jsonl or csv.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here, not to stdout.")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Of a running job: write rows as they finish, to its end."),
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Write a finished job's results as JSON lines or CSV (--follow: a running job's too)."""
    if format not in ("jsonl", "csv"):
        raise fail(f"--format must be jsonl or csv, not {format!r}")
    job_id = _job_id(job_id)
    with _client(url, api_key) as client:
        try:
            chunks = client.export(job_id, format=format, follow=follow)
            if output is None:
                written = _copy(chunks, sys.stdout.buffer.write)
                sys.stdout.flush()
            else:
                with output.open("wb") as handle:
                    written = _copy(chunks, handle.write)
        except TextqError as error:
            if error.problem.get("type") != "/problems/job-not-finished":
                raise
            # The API's words name its query parameters; these are the command's.
            raise fail(
                f"job {job_id} has not finished: add --follow to write its rows as they "
                f"finish, or see its progress with textq status {job_id}"
            ) from None
    if not written:
        typer.echo(f"job {job_id} has no results", err=True)


@quiet_on_closed_pipe
def cancel(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Cancel a job: what has not run yet never will."""
    with _client(url, api_key) as client:
        _print_job(client.cancel(_job_id(job_id)), as_json)


@quiet_on_closed_pipe
def retry(
    job_id: JobIdArgument,
    deadline: Annotated[
        str | None,
        typer.Option(
            help="A new deadline, RFC 3339 with an offset, e.g. 2026-12-01T17:30:00Z: texts "
            "not started by then fail again."
        ),
    ] = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Run a partial or failed job's failed texts again (deadline-expired ones included)."""
    with _client(url, api_key) as client:
        job = client.retry(_job_id(job_id), deadline=deadline)
        _ended(client, job, wait=wait, as_json=as_json)


@quiet_on_closed_pipe
def jobs(
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = JOBS_PER_PAGE,
    cursor: Annotated[
        str | None,
        typer.Option(help="Go on after an earlier page, as its last line on stderr says."),
    ] = None,
    as_json: JsonListOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """List your newest jobs, --limit at a time; when more are left, say how to see them."""
    with _client(url, api_key) as client:
        found, next_cursor = client.jobs_page(status=status, limit=limit, cursor=cursor)
    if as_json:
        typer.echo(json.dumps([job.model_dump(mode="json") for job in found], indent=2))
    else:
        if not found:
            typer.echo(f"no {status} jobs" if status else "no jobs", err=True)
        for job in found:
            _print_job(job, as_json=False)
    if next_cursor is not None:
        typer.echo(_more_jobs_hint(next_cursor, status, limit, as_json), err=True)


def add_client_commands(app: typer.Typer) -> None:
    """Add the client commands to the `textq` command."""
    for command in (submit, bulk, status, results, cancel, retry, jobs):
        app.command()(command)


def _more_jobs_hint(cursor: str, status: str | None, limit: int, as_json: bool) -> str:
    """Return the line saying which command shows the next page of jobs."""
    same = (["--status", status] if status else []) + (
        ["--limit", str(limit)] if limit != JOBS_PER_PAGE else []
    )
    command = shlex.join(
        ["textq", "jobs", *same, *(["--json"] if as_json else []), "--cursor", cursor]
    )
    return f"… more jobs: {command}"


def _copy(chunks: Iterator[bytes], write: Callable[[bytes], object]) -> int:
    """Write every chunk; return how many bytes there were."""
    written = 0
    for chunk in chunks:
        write(chunk)
        written += len(chunk)
    return written
