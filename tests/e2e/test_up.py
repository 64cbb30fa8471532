"""`textq up`: the embedded default a new user starts with, and its clear start-up errors."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from shared.db import Database
from shared.models import JobItem
from tests.e2e.polling import all_results, wait_for_job
from tests.e2e.processes import Process, free_port, into_closed_pipe, start, wait_until_ready
from tests.e2e.test_recovery import running_items

pytestmark = pytest.mark.e2e

QUEUE_PREFIX = "textq-up"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_up(tmp_path, model_dirs, **settings: str) -> tuple[Process, str]:
    """Start `textq up` on the tiny models (and any TEXTQ_ `settings`), leading its own process
    group as a terminal would; return it and its base URL once it is ready."""
    port = free_port()
    env = {
        "TEXTQ_DATA_DIR": str(tmp_path / "textq-data"),
        "TEXTQ_QUEUE_PREFIX": QUEUE_PREFIX,
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
        "TEXTQ_EMBEDDING_MODEL": str(model_dirs.embedding),
        "TEXTQ_WORKER_METRICS_PORT": str(free_port()),
        "TEXTQ_WEBHOOKS_METRICS_PORT": str(free_port()),
    } | {f"TEXTQ_{name.upper()}": value for name, value in settings.items()}
    up = start("up", ["up", "--port", str(port)], env, tmp_path / "logs", own_group=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, [up])
    except BaseException:
        up.stop(sig=signal.SIGKILL)
        raise
    return up, base


def child(up: Process, command: str) -> psutil.Process:
    [process] = [c for c in psutil.Process(up.popen.pid).children() if c.cmdline()[-1] == command]
    return process


def restart_lines(up: Process) -> list[str]:
    return [line for line in up.output().splitlines() if "restarting" in line]


def wait_gone(pgid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_up_serves_both_tasks_from_one_data_dir_and_stops_on_ctrl_c(tmp_path, model_dirs):
    data_dir = tmp_path / "textq-data"
    up, base = start_up(tmp_path, model_dirs)
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            sentiment = http.post(
                "/v1/jobs", json={"task": "sentiment", "input": {"texts": ["I love it", "meh"]}}
            ).json()
            summary = http.post(
                "/v1/jobs", json={"task": "summarize", "input": {"text": "A short story."}}
            ).json()
            for job in (sentiment, summary):
                assert wait_for_job(http, job["id"])["status"] == "succeeded", up.output()
            assert {"label", "score", "scores"} <= set(all_results(http, sentiment["id"])[0])
            assert "summary_text" in all_results(http, summary["id"])[0]
            [answer] = http.post("/analyze", json={"text": "great"}).json()
            assert set(answer) == {"label", "score"}

            # A worker that dies (here kill -9) is restarted, and work goes on.
            children = psutil.Process(up.popen.pid).children()
            assert sorted(c.cmdline()[-1] for c in children) == ["webhooks", "worker"]
            worker = child(up, "worker")
            worker.kill()
            worker.wait(timeout=10)
            again = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "x"}})
            assert wait_for_job(http, again.json()["id"])["status"] == "succeeded", up.output()
            assert restart_lines(up) == ["textq: the worker was killed by SIGKILL; restarting it"]
    finally:
        pgid = up.popen.pid
        if up.popen.poll() is None:
            os.killpg(pgid, signal.SIGINT)  # what one Ctrl-C in a terminal does
        code = up.stop(sig=None)
    assert code == 0, up.output()
    wait_gone(pgid, timeout_s=10)
    assert not group_alive(pgid), "a textq process outlived Ctrl-C"
    # Every child got the Ctrl-C too and exited with it: a stopping `up` restarts none.
    assert len(restart_lines(up)) == 1, up.output()
    assert (data_dir / "textq.db").is_file()
    assert (data_dir / "broker").is_dir()
    assert "Traceback" not in up.output()


def sqlite_of(tmp_path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'textq-data' / 'textq.db'}", application_name="test")


def item_counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        rows = session.execute(select(JobItem.status, func.count()).group_by(JobItem.status))
        return {status: count for status, count in rows}


def test_sigterm_stops_up_like_ctrl_c_and_the_worker_hands_back_its_claim(tmp_path, model_dirs):
    up, base = start_up(tmp_path, model_dirs)
    pgid, db = up.popen.pid, sqlite_of(tmp_path)
    texts = [
        f"review {n}: " + "good value, slow delivery, kind support. " * 12 for n in range(4000)
    ]
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            http.post("/v1/jobs", json={"task": "sentiment", "input": {"texts": texts}})
            deadline = time.monotonic() + 60
            while not running_items(db):  # stop it while the worker holds a claim
                assert time.monotonic() < deadline, up.output()
                time.sleep(0.01)
    finally:
        if up.popen.poll() is None:
            os.kill(pgid, signal.SIGTERM)  # to `up` alone, as systemd, Docker and `kill` do
        code = up.stop(sig=None)
    assert code == 0, up.output()
    wait_gone(pgid)
    assert not group_alive(pgid), "a textq process outlived SIGTERM"
    counts = item_counts(db)
    # The batch in flight was finished and the rest of the claim handed back: nothing is left
    # held by a worker that is gone.
    assert "running" not in counts, counts
    assert counts.get("done", 0) + counts.get("pending", 0) == len(texts), counts
    assert restart_lines(up) == [], up.output()
    assert "Traceback" not in up.output()


def test_the_children_of_an_up_killed_outright_stop_with_it(tmp_path, model_dirs):
    up, _ = start_up(tmp_path, model_dirs)
    children = psutil.Process(up.popen.pid).children()
    assert len(children) == 2
    up.popen.kill()  # kill -9: `up` cannot stop anything itself
    up.popen.wait()
    _, alive = psutil.wait_procs(children, timeout=30)
    for process in alive:
        process.kill()
    assert not alive, f"{[p.cmdline()[-1] for p in alive]} outlived a killed textq up"


def test_a_doorbell_file_caught_half_written_does_not_stop_the_worker(tmp_path, model_dirs):
    up, base = start_up(tmp_path, model_dirs)
    worker = child(up, "worker").pid
    broker = tmp_path / "textq-data" / "broker"
    queue = f"{QUEUE_PREFIX}.sentiment"
    # What a writer leaves between creating a message file and writing it (the embedded broker's
    # race, forced here rather than hoped for), and what a writer that crashed there leaves;
    # "0_" sorts them before any real message, so the worker meets them first.
    caught = broker / "queue" / f"0_{uuid.uuid4()}.{queue}.msg"
    caught.touch()
    crashed = broker / "queue" / f"0_{uuid.uuid4()}.{queue}.msg"
    crashed.write_bytes(b'{"body": "eyJ')
    os.utime(crashed, (time.time() - 60, time.time() - 60))
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            job = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "fine"}})
            assert wait_for_job(http, job.json()["id"])["status"] == "succeeded", up.output()
        assert child(up, "worker").pid == worker, up.output()
        assert (broker / "unreadable" / crashed.name).exists()
    finally:
        code = up.stop()
    assert code == 0, up.output()
    assert restart_lines(up) == [], up.output()
    assert "Unrecoverable" not in up.output()


BURST_JOBS, BURST_THREADS = 1504, 8


def test_a_burst_of_one_text_jobs_from_eight_threads_all_succeed_on_one_worker(
    tmp_path, model_dirs
):
    # All of them in flight at once: the tenant's limit of unfinished jobs is not under test.
    up, base = start_up(tmp_path, model_dirs, max_active_jobs_per_tenant="0")
    worker = child(up, "worker").pid

    def submit_then_wait(thread: int) -> list[str]:
        with httpx.Client(base_url=base, timeout=60) as http:
            ids = [
                http.post(
                    "/v1/jobs",
                    json={"task": "sentiment", "input": {"text": f"burst {thread}: text {n}"}},
                )
                .raise_for_status()
                .json()["id"]
                for n in range(BURST_JOBS // BURST_THREADS)
            ]
            return [
                http.get(f"/v1/jobs/{job_id}", params={"wait_s": 60}).json()["status"]
                for job_id in ids
            ]

    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            # Once the worker consumes, the burst's writes race its reads of the broker folder.
            first = http.post("/v1/jobs", json={"task": "sentiment", "input": {"text": "warm"}})
            assert wait_for_job(http, first.json()["id"])["status"] == "succeeded", up.output()
        with ThreadPoolExecutor(BURST_THREADS) as pool:
            statuses = [
                s for batch in pool.map(submit_then_wait, range(BURST_THREADS)) for s in batch
            ]
        assert len(statuses) == BURST_JOBS
        assert set(statuses) == {"succeeded"}, up.output()
        assert child(up, "worker").pid == worker, up.output()
    finally:
        code = up.stop()
    assert code == 0, up.output()
    assert restart_lines(up) == [], up.output()
    assert "Unrecoverable" not in up.output()


def run_cli(args, env, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "textq", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_without_the_hub_says_which_setting_to_change(tmp_path):
    # The defaults are hub ids; the hub is out of reach (offline mode, loopback endpoint).
    result = run_cli(["up", "--port", str(free_port())], {"TEXTQ_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    # Every missing model in one start, a line each: no fixing one only to hear of the next.
    # (the first `textq:` line says the embedded API needs no keys)
    lines = [line for line in result.stderr.splitlines() if line.startswith("textq: cannot")]
    assert len(lines) == 2 and result.stderr.splitlines()[-2:] == lines, result.stderr
    sentiment, summarize = lines
    assert "distilbert/distilbert-base-uncased-finetuned-sst-2-english" in sentiment
    assert "TEXTQ_SENTIMENT_MODEL" in sentiment
    assert "facebook/bart-large-cnn" in summarize and "TEXTQ_SUMMARIZATION_MODEL" in summarize
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["up", "api"])
def test_a_port_in_use_is_said_in_one_line_before_anything_starts(command, tmp_path, model_dirs):
    env = {
        "TEXTQ_DATA_DIR": str(tmp_path),
        "TEXTQ_SENTIMENT_MODEL": str(model_dirs.sentiment),
        "TEXTQ_SUMMARIZATION_MODEL": str(model_dirs.summarization),
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli([command, "--port", str(port)], env)
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("textq: cannot listen on") and f"127.0.0.1:{port}" in last, last
    assert "--port" in last
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr
    assert "textq is up" not in result.stdout


def test_worker_with_a_missing_model_directory_names_the_setting(tmp_path, model_dirs):
    result = run_cli(
        ["worker", "--tasks", "summarize"],
        {"TEXTQ_DATA_DIR": str(tmp_path), "TEXTQ_SUMMARIZATION_MODEL": str(tmp_path / "gone")},
    )
    assert result.returncode == 1
    assert "TEXTQ_SUMMARIZATION_MODEL" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_with_an_unknown_task_says_so(tmp_path):
    result = run_cli(["worker", "--tasks", "translate"], {"TEXTQ_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "unknown task" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_says_whether_it_created_upgraded_or_found_the_tables_current(tmp_path):
    from shared.migrate import upgrade

    env = {"TEXTQ_DATA_DIR": str(tmp_path)}
    created = run_cli(["db", "upgrade"], env)
    assert created.returncode == 0, created.stderr
    head = created.stdout.strip().rsplit(" ", 1)[-1]
    assert created.stdout.startswith("database created: its tables are at revision 00"), created
    assert run_cli(["db", "upgrade"], env).stdout == f"database is up to date (revision {head})\n"
    older = tmp_path / "older.sqlite3"
    upgrade(f"sqlite:///{older}", revision="0015_drift_counts")
    upgraded = run_cli(["db", "upgrade"], {**env, "TEXTQ_DATABASE_URL": f"sqlite:///{older}"})
    assert upgraded.stdout == f"database upgraded from revision 0015_drift_counts to {head}\n"


def test_keys_are_printed_once_listed_by_prefix_and_revoked(tmp_path):
    env = {"TEXTQ_DATA_DIR": str(tmp_path)}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    made = run_cli(["keys", "create", "--tenant", "acme", "--name", "ci"], env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("tq_")
    prefix = key.split("_")[1]
    listed = run_cli(["keys", "list"], env)
    assert prefix in listed.stdout and key not in listed.stdout
    assert "acme  active" in listed.stdout
    assert run_cli(["keys", "revoke", prefix], env).returncode == 0
    assert "revoked" in run_cli(["keys", "list", "--tenant", "acme"], env).stdout
    again = run_cli(["keys", "revoke", prefix], env)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_a_key_made_for_a_server_that_does_not_check_keys_says_so(tmp_path):
    env = {"TEXTQ_DATA_DIR": str(tmp_path)}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    for auth, why in (("auto", "embedded SQLite"), ("off", "TEXTQ_AUTH=off")):
        made = run_cli(["keys", "create", "--tenant", "acme"], {**env, "TEXTQ_AUTH": auth})
        assert made.returncode == 0, made.stderr
        assert made.stdout.splitlines()[-1].startswith("tq_")  # as `| tail -1` reads it
        (note,) = made.stderr.splitlines()
        assert "does not check keys" in note and why in note and "TEXTQ_AUTH=required" in note
    required = run_cli(["keys", "create", "--tenant", "acme"], {**env, "TEXTQ_AUTH": "required"})
    assert required.returncode == 0 and required.stderr == ""


def test_keys_list_into_a_closed_pipe_ends_quietly_with_141(tmp_path):
    """As the client commands do (tests/e2e/test_client_cli.py): `textq keys list | head`."""
    env = {**os.environ, "TEXTQ_DATA_DIR": str(tmp_path)}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    run_cli(["keys", "create", "--tenant", "acme"], env)
    status, stderr = into_closed_pipe(["keys", "list"], env)
    assert status == 141
    assert stderr == "", stderr


def test_an_api_without_keys_refuses_to_listen_beyond_loopback(tmp_path):
    result = run_cli(
        ["api", "--host", "0.0.0.0", "--port", str(free_port())], {"TEXTQ_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 1
    assert "only listens on 127.0.0.1" in result.stderr
    assert "TEXTQ_AUTH=required" in result.stderr


def test_a_tenants_retention_is_set_from_the_command_line(tmp_path):
    env = {"TEXTQ_DATA_DIR": str(tmp_path)}
    run_cli(["db", "upgrade"], env)
    run_cli(["keys", "create", "--tenant", "acme"], env)
    assert "for 90 days" in run_cli(["tenants", "retention", "acme", "--days", "90"], env).stdout
    assert "forever" in run_cli(["tenants", "retention", "acme", "--days", "0"], env).stdout
    missing = run_cli(["tenants", "retention", "nobody", "--days", "1"], env)
    assert missing.returncode == 1 and "no tenant" in missing.stderr
