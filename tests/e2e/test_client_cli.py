"""The `textq` client commands against a running server, as a user types them."""

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import create_api_key
from tests.e2e.processes import into_closed_pipe

pytestmark = pytest.mark.e2e


@pytest.fixture
def textq(service):
    """Run `textq ARGS...` with TEXTQ_URL and TEXTQ_API_KEY set, as a user's shell has them."""
    env = {
        **os.environ,
        "TEXTQ_URL": service.base_url,
        "TEXTQ_API_KEY": create_api_key(service.env, tenant="cli-tests"),
    }

    def run(
        *args: str, ok: bool = True, env_changes: dict[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the command; `env_changes` sets variables, or unsets those mapped to None."""
        changed = {**env, **(env_changes or {})}
        done = subprocess.run(
            [sys.executable, "-m", "textq", *args],
            env={name: value for name, value in changed.items() if value is not None},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    run.env = env  # type: ignore[attr-defined]  # for tests that start textq themselves
    return run


def test_submit_and_wait_prints_the_finished_job(textq):
    done = textq("submit", "sentiment", f"I love it {uuid.uuid4().hex}", "--wait", "--json")
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["progress"]["done"] == 1
    assert "1/1" in done.stderr  # the progress bar ran to the end
    assert json.loads(textq("status", job["id"], "--json").stdout)["id"] == job["id"]
    listed = json.loads(textq("jobs", "--status", "succeeded", "--json").stdout)
    assert job["id"] in {j["id"] for j in listed}


def test_a_document_from_a_file_is_summarized(textq, tmp_path):
    report = tmp_path / "report.txt"
    report.write_text(" ".join(f"Finding {n} is worth a line." for n in range(80)))
    done = textq("submit", "summarize", str(report), "--wait")
    job = json.loads(textq("status", done.stdout.split()[0], "--json").stdout)
    assert job["status"] == "succeeded" and job["input"]["kind"] == "document"
    (row,) = [json.loads(line) for line in textq("results", job["id"]).stdout.splitlines()]
    assert row["summary_text"] and row["summary_text"].strip() in done.stderr
    # Its chunks are counted as the API counts them.
    chunks = job["progress"]["chunks"]
    assert chunks["total"] > 1
    assert re.search(rf"^\W*chunks\W+{chunks['done']} of {chunks['total']}\W", done.stderr, re.M)
    # The live bar counts them too, where the texts bar can only say 0/1 until the end.
    assert re.search(rf"^chunks\W.*\b{chunks['done']}/{chunks['total']}\b", done.stderr, re.M)


def test_bulk_shows_progress_and_a_summary_then_results_go_to_a_file(textq, tmp_path):
    feedback = tmp_path / "feedback.csv"
    run = uuid.uuid4().hex[:8]
    with feedback.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket", "comment"])
        writer.writerows((f"T-{n}", f"comment {n} of {run}") for n in range(300))
    done = textq("bulk", str(feedback), "--column", "comment", "--id-column", "ticket", "--wait")
    assert "300/300" in done.stderr and "label" in done.stderr  # bar, then the summary table
    job_id = done.stdout.split()[0]
    # Many texts end with a digest: the first rows, numbered by their API `index`, and the
    # command that prints them all.
    assert re.search(r"^\W*index\W", done.stderr, re.MULTILINE)
    assert re.search(r"^\W*0\W+T-0\W", done.stderr, re.MULTILINE)
    assert "T-299" not in done.stderr and f"textq results {job_id}" in done.stderr
    out = tmp_path / "results.csv"
    textq("results", job_id, "--format", "csv", "-o", str(out))
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 300 and rows[0]["custom_id"] == "T-0"


def test_errors_are_one_line_and_a_non_zero_exit(textq):
    unknown = textq("status", str(uuid.uuid4()), ok=False)
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and unknown.stderr.startswith("textq: 404")
    finished = json.loads(textq("submit", "sentiment", "done soon", "--wait", "--json").stdout)
    again = textq("cancel", finished["id"], ok=False)
    assert again.returncode == 1 and again.stderr.startswith("textq: 409")
    nowhere = textq("jobs", "--url", "http://127.0.0.1:9", ok=False)
    assert nowhere.returncode == 1 and "cannot reach" in nowhere.stderr


# A job id as the CLI prints it: whole, or (the old bar's way) its first eight characters.
JOB_ID_LIKE = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b|\b[0-9a-f]{8}\b(?!-)")


def test_wait_ends_with_the_label_and_score_under_the_whole_job_id(textq):
    done = textq("submit", "sentiment", f"I love it {uuid.uuid4()}", "--wait", env_changes=NARROW)
    job_id = done.stdout.split()[0]
    (row,) = [json.loads(line) for line in textq("results", job_id).stdout.splitlines()]
    assert re.search(rf"^\W*0\W+{row['label']}\W+{row['score']:.3f}\W", done.stderr, re.M)
    # Every id shown is whole, on one line, and one `textq status` answers.
    assert set(JOB_ID_LIKE.findall(done.stderr)) == {job_id}, done.stderr
    assert textq("status", job_id).stdout.startswith(job_id)


NARROW = {"COLUMNS": "72"}


def test_wait_ends_with_the_summary(textq):
    done = textq("submit", "summarize", "--text", f"Ship it {uuid.uuid4()}.", "--wait")
    job_id = done.stdout.split()[0]
    (row,) = [json.loads(line) for line in textq("results", job_id).stdout.splitlines()]
    assert row["summary_text"].strip() in done.stderr


def test_a_short_job_id_is_refused_with_what_an_id_looks_like(textq):
    job = json.loads(textq("submit", "sentiment", "short ids", "--json").stdout)
    short = textq("status", job["id"][:8], ok=False)
    assert short.returncode == 1 and short.stderr.count("\n") == 1
    assert "36" in short.stderr and "textq jobs" in short.stderr


def test_a_missing_file_is_an_error_and_text_goes_with_text(textq, service, tmp_path):
    """What counts as a file is tested in tests/textq/test_client_commands.py; here, that
    the command refuses before sending anything, and that --text sends the words."""
    headers = {"Authorization": f"Bearer {textq.env['TEXTQ_API_KEY']}"}

    def newest() -> list[str]:
        page = httpx.get(f"{service.base_url}/v1/jobs?limit=1", headers=headers, timeout=30)
        return [job["id"] for job in page.raise_for_status().json()["items"]]

    before = newest()
    missing = textq("submit", "summarize", "nosuch.txt", ok=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == (
        "textq: nosuch.txt: no such file; to send it as the text itself, use --text nosuch.txt\n"
    )
    folder = textq("submit", "summarize", str(tmp_path), ok=False)
    assert folder.returncode == 1 and "is a directory" in folder.stderr
    no_upload = textq("bulk", "nosuch.csv", ok=False)
    assert no_upload.returncode == 1 and no_upload.stderr == "textq: nosuch.csv: no such file\n"
    assert newest() == before  # nothing was sent
    literal = json.loads(textq("submit", "sentiment", "--text", "nosuch.txt", "--json").stdout)
    assert literal["input"]["kind"] == "texts" and newest() == [literal["id"]]


def test_a_closed_pipe_ends_the_command_quietly(textq):
    """`textq results J | head -2`: the reader goes away, and textq stops without a word."""
    job = json.loads(textq("submit", "sentiment", "pipes", "--wait", "--json").stdout)
    for args in (["results", job["id"]], ["status", job["id"]], ["jobs"]):
        status, stderr = into_closed_pipe(args, {**os.environ, **textq.env})
        # 128 + SIGPIPE, as `cat` killed by a closed pipe reports, for `set -o pipefail`.
        assert status == 141
        assert stderr == "", stderr


def test_each_text_option_is_a_text_of_the_job(textq):
    """`--text a --text b` is a job of two texts, in order, for either task."""
    run = uuid.uuid4().hex[:8]
    done = textq("submit", "sentiment", "--text", f"good {run}", "--text", f"bad {run}", "--wait")
    job_id = done.stdout.split()[0]
    rows = [json.loads(line) for line in textq("results", job_id).stdout.splitlines()]
    assert [row["index"] for row in rows] == [0, 1] and "2/2" in done.stderr
    summarize = textq("submit", "summarize", "--text", "One.", "--text", "Two.", "--json")
    job = json.loads(summarize.stdout)
    assert job["input"]["kind"] == "texts" and job["progress"]["total"] == 2


def test_jobs_says_how_to_see_the_jobs_past_its_limit(textq, service):
    fresh = {"TEXTQ_API_KEY": create_api_key(service.env, tenant=f"more-{uuid.uuid4().hex[:8]}")}
    older, newer = (
        json.loads(textq("submit", "sentiment", "x", "--json", env_changes=fresh).stdout)["id"]
        for _ in range(2)
    )
    first = textq("jobs", "--limit", "1", env_changes=fresh)
    assert first.stdout.split()[0] == newer
    (hint,) = first.stderr.splitlines()
    assert hint.startswith("… more jobs: textq jobs --limit 1 --cursor ")
    rest = textq(*shlex.split(hint.split(": ", 1)[1])[1:], env_changes=fresh)
    assert rest.stdout.split()[0] == older and rest.stderr == ""  # nothing left: no hint
    assert textq("jobs", env_changes=fresh).stderr == ""  # all on the first page


def test_an_empty_answer_says_so_on_stderr(textq, service):
    fresh = create_api_key(service.env, tenant=f"empty-{uuid.uuid4().hex[:8]}")
    listed = textq("jobs", env_changes={"TEXTQ_API_KEY": fresh})
    assert listed.stdout == "" and listed.stderr == "no jobs\n"
    running = textq("jobs", "--status", "running", env_changes={"TEXTQ_API_KEY": fresh})
    assert running.stdout == "" and running.stderr == "no running jobs\n"


def test_the_default_server_is_where_the_servers_settings_put_it(textq, service):
    """With no TEXTQ_URL, the CLI goes where TEXTQ_API_HOST and TEXTQ_API_PORT put `textq api`."""
    where = urlsplit(service.base_url)
    settings = {"TEXTQ_URL": None, "TEXTQ_API_PORT": str(where.port), "TEXTQ_API_HOST": "0.0.0.0"}
    assert textq("jobs", "--limit", "1", env_changes=settings).returncode == 0
    # TEXTQ_URL (and --url) still win over the server's settings.
    elsewhere = textq("jobs", env_changes={**settings, "TEXTQ_URL": "http://127.0.0.1:9"}, ok=False)
    assert elsewhere.returncode == 1 and "cannot reach http://127.0.0.1:9" in elsewhere.stderr


def test_a_bad_setting_is_named_in_one_line():
    env = {**os.environ, "TEXTQ_API_PORT": "eighty"}
    env.pop("TEXTQ_URL", None)
    for args in (["jobs"], ["worker"], ["keys", "list"], ["up"], ["api"]):
        done = subprocess.run(
            [sys.executable, "-m", "textq", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("textq: TEXTQ_API_PORT: Input should be a valid integer")
